//! One revision at work: the reconcile loop that samples its demand (the router's
//! activator queue and in-flight requests) each tick, asks the autoscaler how many
//! instances it should have and makes it so; and each instance's life: start, readiness,
//! serving, then a graceful stop when the scaler lets it go or a failure report when it
//! dies. Failures back off exponentially so a broken image never restarts in a hot loop.

use super::throttle::FreezeThrottle;
use super::{health, Ctx};
use skiff_core::ServiceSpec;
use skiff_router::{upstream, RevisionPool, Target, Upstream};
use skiff_sandbox::{Exit, Instance, Prepared, SandboxSpec};
use skiff_scaler::{Decision, Observation, Scaler};
use skiff_store::{ExitRecord, NewInstance};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};

/// How often the reconcile loop samples demand and decides, without being woken.
const TICK: Duration = Duration::from_millis(100);
/// How long an instance may take to listen on its port (Cloud Run's startup limit).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(240);
/// First back-off after a failed start; doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Lines of an instance's log kept with a failure.
const FAILURE_LOG_LINES: usize = 20;

/// A live instance as `describe` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LiveInstance {
    /// Instance id.
    pub id: String,
    /// starting, ready, frozen (CPU throttling, no request in flight), unready or
    /// stopping.
    pub state: &'static str,
    /// Unix time it was started.
    pub started_at: i64,
}

struct Live {
    info: LiveInstance,
    stop: Option<oneshot::Sender<()>>,
}

/// A revision's instances and the loop that scales them.
pub struct RevisionRunner {
    pub name: String,
    pub service: String,
    pub spec: ServiceSpec,
    pub image_digest: skiff_core::Digest,
    template: SandboxSpec,
    pub pool: Arc<RevisionPool>,
    ctx: Arc<Ctx>,
    live: Mutex<HashMap<String, Live>>,
    starting: AtomicU32,
    /// A sandbox prepared for the next instance, waiting to exec.
    prepared: Mutex<Option<Prepared>>,
    preparing: std::sync::atomic::AtomicBool,
    failures_in_a_row: AtomicU32,
    /// Instances kept regardless of demand (a deploy warming the new revision).
    warm_floor: AtomicU32,
    scaler: Mutex<Scaler>,
    /// The scaler's latest decision and its Unix time, for `describe`.
    decision: Mutex<Option<ScaleDecision>>,
    retired: watch::Sender<bool>,
    /// Bumped whenever an instance becomes ready or fails.
    events: watch::Sender<u64>,
}

/// The autoscaler's latest decision for a revision, as `describe` shows it.
#[derive(Clone, Debug)]
pub struct ScaleDecision {
    /// Unix time of the decision.
    pub at: i64,
    pub decision: Decision,
}

/// What happened to a revision's first instance (for deploys that wait on it).
pub enum Outcome {
    Ready,
    Failed(String),
}

/// What a revision runs: everything resolved from its stored spec.
pub struct RevisionParts {
    pub service: String,
    pub name: String,
    pub spec: ServiceSpec,
    pub image_digest: skiff_core::Digest,
    /// The sandbox every instance starts from (its id and log path filled in per instance).
    pub template: SandboxSpec,
    pub pool: Arc<RevisionPool>,
    pub scaling: skiff_scaler::Settings,
}

impl RevisionRunner {
    pub fn new(ctx: Arc<Ctx>, parts: RevisionParts) -> Arc<RevisionRunner> {
        Arc::new(RevisionRunner {
            scaler: Mutex::new(Scaler::new(parts.scaling, Instant::now())),
            decision: Mutex::new(None),
            name: parts.name,
            service: parts.service,
            spec: parts.spec,
            image_digest: parts.image_digest,
            template: parts.template,
            pool: parts.pool,
            ctx,
            live: Mutex::new(HashMap::new()),
            starting: AtomicU32::new(0),
            prepared: Mutex::new(None),
            preparing: std::sync::atomic::AtomicBool::new(false),
            failures_in_a_row: AtomicU32::new(0),
            warm_floor: AtomicU32::new(0),
            retired: watch::channel(false).0,
            events: watch::channel(0).0,
        })
    }

    /// Starts the reconcile loop.
    pub fn spawn(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move { me.reconcile_loop().await });
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its live instances.
    pub fn instances(&self) -> Vec<LiveInstance> {
        let mut v: Vec<_> = self.live().values().map(|l| l.info.clone()).collect();
        for i in &mut v {
            if i.state == "ready" && self.pool.is_paused(&i.id) {
                i.state = "frozen";
            }
        }
        v.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        v
    }

    /// The revision no longer receives new traffic: its instances stop as soon as they are
    /// idle and its queue is empty; then the loop ends.
    pub fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Whether the revision was retired (its runner then ends once idle).
    pub fn is_retired(&self) -> bool {
        *self.retired.borrow()
    }

    /// Stops every instance (daemon shutdown), gracefully.
    pub fn stop_all(&self) {
        self.retire();
        for live in self.live().values_mut() {
            if let Some(stop) = live.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    /// The autoscaler's latest decision.
    pub fn last_decision(&self) -> Option<ScaleDecision> {
        self.decision
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps at least `count` instances up and waits until that many are ready or one
    /// fails.
    pub async fn warm(self: &Arc<Self>, count: u32, timeout: Duration) -> Outcome {
        let mut events = self.events.subscribe();
        self.warm_floor.store(count, Ordering::SeqCst);
        self.pool.clear_backoff();
        self.pool.poke();
        let failures_before = self.failures_in_a_row.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.pool.load().ready >= count {
                return Outcome::Ready;
            }
            if self.failures_in_a_row.load(Ordering::SeqCst) > failures_before {
                return Outcome::Failed(
                    self.pool
                        .backoff_reason()
                        .unwrap_or_else(|| "the instance failed to start".into()),
                );
            }
            if tokio::time::timeout_at(deadline, events.changed())
                .await
                .is_err()
            {
                return Outcome::Failed(format!(
                    "no instance became ready within {}s",
                    timeout.as_secs()
                ));
            }
        }
    }

    /// Lets the warm instances go idle like any others.
    pub fn release_warm(&self) {
        self.warm_floor.store(0, Ordering::SeqCst);
    }

    async fn reconcile_loop(self: Arc<Self>) {
        let mut retired = self.retired.subscribe();
        loop {
            let is_retired = *retired.borrow_and_update();
            self.reconcile(is_retired);
            if is_retired || self.ctx.is_shutting_down() {
                self.discard_prepared().await;
            } else {
                self.refill_prepared();
            }
            let load = self.pool.load();
            if is_retired
                && load.queued == 0
                && load.in_flight == 0
                && self.live().is_empty()
                && self.starting.load(Ordering::SeqCst) == 0
            {
                self.ctx.forget_runner(&self);
                return;
            }
            tokio::select! {
                () = self.pool.demand_changed() => {}
                () = tokio::time::sleep(TICK) => {}
                _ = retired.changed() => {}
            }
        }
    }

    /// One step: sample demand, let the scaler decide, start instances up to its count
    /// and stop idle ones above it (never one with a request in flight).
    fn reconcile(self: &Arc<Self>, retired: bool) {
        let now = Instant::now();
        let load = self.pool.load();
        let want = if retired {
            // No new traffic comes: serve what is still queued, then go.
            skiff_scaler::instances_for(load.in_flight + load.queued, self.spec.concurrency)
        } else {
            let decision = self.decide(now, load);
            decision
                .max(self.warm_floor.load(Ordering::SeqCst))
                .min(self.spec.max_instances)
        };
        let starting = self.starting.load(Ordering::SeqCst);
        if !self.ctx.is_shutting_down() && !self.pool.in_backoff(now) {
            for _ in (load.ready + starting)..want {
                self.starting.fetch_add(1, Ordering::SeqCst);
                let me = Arc::clone(self);
                tokio::spawn(async move { me.run_instance().await });
            }
        }
        let mut surplus = load.ready.saturating_sub(want);
        if surplus == 0 {
            return;
        }
        let mut idle = self.pool.idle_times(now);
        idle.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        for (id, _) in idle {
            if surplus == 0 {
                break;
            }
            if self.pool.retire_if_idle(&id, Duration::ZERO, now) {
                surplus -= 1;
                self.stop_instance(&id);
            }
        }
    }

    /// Feeds the scaler this tick's sample and keeps its decision for `describe`.
    fn decide(&self, now: Instant, load: skiff_router::Load) -> u32 {
        let decision = {
            let mut scaler = self.scaler.lock().unwrap_or_else(|p| p.into_inner());
            scaler.observe(
                now,
                Observation {
                    in_flight: load.in_flight,
                    queued: load.queued,
                    requests_total: load.requests_total,
                },
            );
            scaler.decide(now, load.ready)
        };
        let desired = decision.desired;
        let mut last = self.decision.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref().is_none_or(|l| {
            l.decision.desired != desired || l.decision.panicking != decision.panicking
        }) {
            tracing::debug!(revision = %self.name, desired, "{}", decision.reason);
        }
        *last = Some(ScaleDecision {
            at: super::unix_now(),
            decision,
        });
        desired
    }

    fn stop_instance(&self, id: &str) {
        if let Some(live) = self.live().get_mut(id) {
            live.info.state = "stopping";
            if let Some(stop) = live.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    fn bump(&self) {
        self.events.send_modify(|n| *n += 1);
    }

    /// One instance from start to end.
    async fn run_instance(self: Arc<Self>) {
        let _alive = self.ctx.alive();
        let t0 = Instant::now();
        let prepared = match self.take_prepared() {
            Some(p) => Ok(p),
            None => self.prepare_one().await,
        };
        self.refill_prepared();
        let prepared = match prepared {
            Ok(p) => p,
            Err((id, reason)) => {
                self.starting.fetch_sub(1, Ordering::SeqCst);
                self.failed(&id, &reason);
                self.bump();
                return;
            }
        };
        let id = prepared.id().to_owned();
        let (stop_tx, stop_rx) = oneshot::channel();
        self.live().insert(
            id.clone(),
            Live {
                info: LiveInstance {
                    id: id.clone(),
                    state: "starting",
                    started_at: super::unix_now(),
                },
                stop: Some(stop_tx),
            },
        );
        let result = self.launch_and_serve(prepared, stop_rx, t0).await;
        self.live().remove(&id);
        if let Err(reason) = result {
            self.failed(&id, &reason);
        }
        self.bump();
    }

    /// Registers a new instance and prepares its sandbox; on failure, its id and why.
    async fn prepare_one(&self) -> Result<Prepared, (String, String)> {
        let id = instance_id(&self.service);
        let log_path = self.ctx.home.logs_dir().join(format!("{id}.log"));
        let mut spec = self.template.clone();
        spec.id = id.clone();
        spec.log_path = log_path.clone();
        let registered = self.ctx.db().create_instance(
            &NewInstance {
                id: id.clone(),
                image_digest: self.image_digest.clone(),
                supervisor_pid: std::process::id(),
                supervisor_start: self.ctx.start_time,
                log_path: log_path.display().to_string(),
                service: Some((self.service.clone(), self.name.clone())),
            },
            0..skiff_sandbox::SLOTS,
        );
        if let Err(e) = registered {
            return Err((id.clone(), format!("registering instance {id}: {e}")));
        }
        match self.ctx.spawner.prepare(spec).await {
            Ok(p) => Ok(p),
            Err(e) => {
                self.finish_record(&id, None);
                Err((id, e.to_string()))
            }
        }
    }

    fn take_prepared(&self) -> Option<Prepared> {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Prepares the next instance's sandbox in the background, so the next cold start
    /// only has to exec (see `Sandbox::prepare`).
    fn refill_prepared(self: &Arc<Self>) {
        if !self.ctx.prepare_sandboxes
            || *self.retired.borrow()
            || self.ctx.is_shutting_down()
            || self
                .prepared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
            || self.preparing.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _alive = me.ctx.alive();
            let result = me.prepare_one().await;
            me.preparing.store(false, Ordering::SeqCst);
            match result {
                Ok(p) => {
                    *me.prepared.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
                    if *me.retired.borrow() || me.ctx.is_shutting_down() {
                        me.discard_prepared().await;
                    }
                }
                Err((id, reason)) => {
                    tracing::warn!(revision = %me.name, "preparing instance {id}: {reason}");
                }
            }
        });
    }

    /// Lets go of the prepared sandbox, if any. Counts as work in flight, so shutdown
    /// waits for its row to go (the reconcile loop may take the sandbox just as the task
    /// that prepared it, and kept the daemon up, ends).
    pub async fn discard_prepared(&self) {
        let _alive = self.ctx.alive();
        let Some(p) = self.take_prepared() else {
            return;
        };
        let id = p.id().to_owned();
        let _ = tokio::task::spawn_blocking(move || drop(p)).await;
        if let Err(e) = self.ctx.db().discard_instance(&id) {
            tracing::warn!(instance = %id, "forgetting a prepared sandbox: {e}");
        }
    }

    /// Runs one instance; `Err` carries why it failed (to start, or later).
    async fn launch_and_serve(
        self: &Arc<Self>,
        prepared: Prepared,
        mut stop_rx: oneshot::Receiver<()>,
        t0: Instant,
    ) -> Result<(), String> {
        let id = prepared.id().to_owned();
        let id = id.as_str();
        let launched = tokio::task::spawn_blocking(move || prepared.launch()).await;
        let launched_at = t0.elapsed();
        let mut instance = match launched {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                self.starting.fetch_sub(1, Ordering::SeqCst);
                self.finish_record(id, None);
                return Err(e.to_string());
            }
            Err(e) => {
                self.starting.fetch_sub(1, Ordering::SeqCst);
                self.finish_record(id, None);
                return Err(format!("launching: {e}"));
            }
        };
        let _ = self.ctx.db().set_instance_pid(id, instance.pid() as u32);
        let ready = self.become_ready(&instance, &mut stop_rx).await;
        self.starting.fetch_sub(1, Ordering::SeqCst);
        tracing::debug!(
            instance = %id,
            launched = ?launched_at,
            ready = ?t0.elapsed(),
            "cold start"
        );
        let mut failure = None;
        let stop_now = match ready {
            Ok((upstream, target)) => {
                self.failures_in_a_row.store(0, Ordering::SeqCst);
                self.set_state(id, "ready");
                self.pool.add_instance(upstream);
                self.bump();
                tracing::info!(instance = %id, revision = %self.name, "ready");
                let exited = wait_exit(&instance);
                tokio::select! {
                    _ = exited => {
                        self.pool.remove_instance(id);
                        false
                    }
                    _ = &mut stop_rx => {
                        // Out of the pool, so that no request can freeze it while it stops.
                        self.pool.remove_instance(id);
                        true
                    }
                    reason = self.watch_health(id, &target) => {
                        self.pool.remove_instance(id);
                        self.set_state(id, "stopping");
                        failure = Some(reason);
                        true
                    }
                }
            }
            Err(Ready::Stopped) => true,
            Err(Ready::Exited) => false,
            Err(Ready::Failed(reason)) => {
                failure = Some(reason);
                true
            }
        };
        let grace = self.ctx.stop_grace;
        let (instance_back, exit) = tokio::task::spawn_blocking(move || {
            let exit = if stop_now {
                instance.stop(grace)
            } else {
                instance.wait()
            };
            (instance, exit)
        })
        .await
        .map_err(|e| format!("supervising instance {id}: {e}"))?;
        drop(instance_back);
        let exit = exit.map_err(|e| format!("reaping instance {id}: {e}"))?;
        self.finish_record(id, Some(exit));
        if let Some(reason) = failure {
            return Err(reason);
        }
        if stop_now {
            return Ok(());
        }
        Err(describe_exit(&exit, self.spec.memory_bytes))
    }

    /// Waits for the instance to listen (and pass the startup probe, if any).
    async fn become_ready(
        &self,
        instance: &Instance,
        stop_rx: &mut oneshot::Receiver<()>,
    ) -> Result<(Upstream, Target), Ready> {
        let netns = match open_netns(instance.pid()) {
            Ok(ns) => ns,
            // A process that is exiting has no namespaces left to open. The kernel drops
            // them before it makes the pidfd readable, so give the exit a moment to show.
            Err(_) if exited_within(instance.pidfd(), EXIT_SETTLE) => return Err(Ready::Exited),
            Err(e) => {
                return Err(Ready::Failed(format!(
                    "opening the instance's network namespace: {e}"
                )))
            }
        };
        let target = Target::Netns {
            netns: Arc::new(netns),
            port: self.spec.port,
        };
        let probe_target = target.clone();
        let port = self.spec.port;
        let pidfd = instance
            .pidfd()
            .try_clone_to_owned()
            .map_err(|e| Ready::Failed(e.to_string()))?;
        let connect = tokio::task::spawn_blocking(move || {
            wait_listening(&probe_target, &pidfd, STARTUP_TIMEOUT)
        });
        let stream = tokio::select! {
            r = connect => match r {
                Ok(Ok(Some(stream))) => stream,
                Ok(Ok(None)) => return Err(Ready::Exited),
                Ok(Err(())) => return Err(Ready::Failed(format!(
                    "the app did not listen on port {port} within {}s",
                    STARTUP_TIMEOUT.as_secs()
                ))),
                Err(e) => return Err(Ready::Failed(e.to_string())),
            },
            _ = &mut *stop_rx => return Err(Ready::Stopped),
        };
        // Without a startup probe, an HTTP readiness probe gates the first request, as
        // Knative's readiness probe does.
        let gate = self.spec.startup_probe.as_ref().or_else(|| {
            self.spec
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_path.as_ref())
        });
        if let Some(path) = gate {
            self.probe_until_ok(&target, path, instance, stop_rx)
                .await?;
        }
        let mut upstream = Upstream::new(instance.id(), target.clone());
        upstream.put_fresh(stream);
        if self.spec.cpu_throttling {
            let throttle = FreezeThrottle::new(instance).map_err(Ready::Failed)?;
            upstream = upstream.with_throttle(Box::new(throttle));
        }
        Ok((upstream, target))
    }

    fn set_state(&self, id: &str, state: &'static str) {
        if let Some(l) = self.live().get_mut(id) {
            l.info.state = state;
        }
    }

    /// Runs the readiness and liveness probes of a serving instance. A failing readiness
    /// probe takes it out of the rotation until it passes again; a failing liveness probe
    /// ends this future with the reason, and the instance is restarted (with backoff).
    /// Pending forever when the spec has neither.
    async fn watch_health(&self, id: &str, target: &Target) -> String {
        let awake = || self.pool.hold(id);
        let readiness = self.spec.readiness_probe.as_ref().map(|p| {
            health::watch(p, target, awake, |passing| {
                self.pool.set_serving(id, passing);
                self.set_state(id, if passing { "ready" } else { "unready" });
                if !passing {
                    tracing::warn!(instance = %id, "readiness probe {} failing: out of the rotation", p.describe());
                }
                std::ops::ControlFlow::Continue(())
            })
        });
        let liveness = self.spec.liveness_probe.as_ref().map(|p| {
            health::watch(p, target, awake, |passing| {
                if passing {
                    std::ops::ControlFlow::Continue(())
                } else {
                    std::ops::ControlFlow::Break(())
                }
            })
        });
        tokio::select! {
            last = or_pending(liveness) => {
                let p = self.spec.liveness_probe.as_ref().expect("a liveness probe ran");
                format!(
                    "failed its liveness probe ({} failed {} times in a row, last: {last}): restarted",
                    p.describe(),
                    p.failure_threshold
                )
            }
            last = or_pending(readiness) => last,
        }
    }

    async fn probe_until_ok(
        &self,
        target: &Target,
        path: &str,
        instance: &Instance,
        stop_rx: &mut oneshot::Receiver<()>,
    ) -> Result<(), Ready> {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            let last = match upstream::http_probe(target, path).await {
                Ok(code) if (200..400).contains(&code) => return Ok(()),
                Ok(code) => format!("status {code}"),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Ready::Failed(format!(
                    "startup probe GET {path} failed for {}s (last: {last})",
                    STARTUP_TIMEOUT.as_secs()
                )));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = wait_exit(instance) => return Err(Ready::Exited),
                _ = &mut *stop_rx => return Err(Ready::Stopped),
            }
        }
    }

    fn finish_record(&self, id: &str, exit: Option<Exit>) {
        let record = exit.map_or(
            ExitRecord {
                code: Some(127),
                signal: None,
                oom_killed: false,
            },
            |e| ExitRecord {
                code: e.code,
                signal: e.signal,
                oom_killed: e.oom_killed,
            },
        );
        if let Err(e) = self.ctx.db().finish_instance(id, Some(record)) {
            tracing::error!(instance = %id, "recording the exit: {e}");
        }
    }

    /// Records a failure with the log's tail and backs off before the next start.
    fn failed(&self, id: &str, reason: &str) {
        let n = self.failures_in_a_row.fetch_add(1, Ordering::SeqCst);
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << n.min(10))
            .min(MAX_BACKOFF);
        let log_path = self.ctx.home.logs_dir().join(format!("{id}.log"));
        let tail = super::logs::tail_messages(&log_path, FAILURE_LOG_LINES);
        let reason = format!("instance {id} {reason}");
        tracing::warn!(revision = %self.name, "{reason}; next try in {backoff:?}");
        if let Err(e) = self
            .ctx
            .db()
            .record_revision_failure(&self.name, &reason, &tail)
        {
            tracing::error!(revision = %self.name, "recording a failure: {e}");
        }
        self.pool.fail_waiters(&reason, backoff);
    }
}

enum Ready {
    /// Asked to stop while starting.
    Stopped,
    /// It exited before listening.
    Exited,
    /// It could not become ready.
    Failed(String),
}

/// The future's output, or never when there is no future.
async fn or_pending<F: std::future::Future>(future: Option<F>) -> F::Output {
    match future {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// How long an exiting process may take between losing its namespaces and its pidfd
/// turning readable (it is already past the point of no return: microseconds).
const EXIT_SETTLE: Duration = Duration::from_millis(200);

/// Waits up to `wait` for the process behind `pidfd` to exit; whether it did.
fn exited_within(pidfd: rustix::fd::BorrowedFd<'_>, wait: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let ts = Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: wait.subsec_nanos() as i64,
    };
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

/// Resolves once the instance's first process has exited.
async fn wait_exit(instance: &Instance) {
    let Ok(fd) = instance.pidfd().try_clone_to_owned() else {
        return;
    };
    // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open and unchanged
    // for its whole life.
    let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    let Ok(fd) = registered else {
        return;
    };
    let _ = fd.readable().await;
}

/// Polls the port until it accepts a connection (`Some`), the process exits (`None`), or
/// the time is up (`Err`). Runs on a blocking thread: the first tries are sub-millisecond
/// apart, finer than the async timer allows, because cold start is measured in them.
fn wait_listening(
    target: &Target,
    pidfd: &OwnedFd,
    timeout: Duration,
) -> Result<Option<std::net::TcpStream>, ()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(100);
    loop {
        if let Ok(stream) = upstream::connect_blocking(target) {
            return Ok(Some(stream));
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        if exited_within(pidfd.as_fd(), pause) {
            return Ok(None);
        }
        pause = (pause * 3 / 2).min(Duration::from_millis(20));
    }
}

fn open_netns(pid: i32) -> std::io::Result<OwnedFd> {
    Ok(std::fs::File::open(format!("/proc/{pid}/ns/net"))?.into())
}

/// `SERVICE-xxxxxx` when the name leaves room, else `i` and 12 hex digits.
fn instance_id(service: &str) -> String {
    if service.len() <= 24 {
        let mut b = [0u8; 3];
        getrandom::fill(&mut b).expect("the kernel's random source is available");
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("{service}-{hex}")
    } else {
        crate::launch::random_id("i")
    }
}

/// A short reason for an unexpected exit.
pub fn describe_exit(exit: &Exit, memory: u64) -> String {
    if exit.oom_killed {
        return format!("ran out of memory (limit {} MiB)", memory >> 20);
    }
    match (exit.code, exit.signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    }
}
