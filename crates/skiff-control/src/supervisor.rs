//! One instance's life: prepare (unless the warm pool had one), launch, wait until it
//! listens (and passes its startup probe), serve while its probes pass, then a graceful
//! stop when the reconciler lets it go, or a failure report when it dies. Failures back
//! off exponentially so a broken image never restarts in a hot loop. The phase of each
//! step is recorded in the runner; the runtime is reached only through its traits.

use crate::health;
use crate::phase::InstancePhase;
use crate::runner::{RevisionRunner, STARTUP_TIMEOUT};
use crate::runtime::{
    ExecProbe, ExitCheck, ExitStatus, ListenersCheck, PreparedInstance, RunningInstance,
    RuntimeError,
};
use skiff_core::Backoff;
use skiff_router::{upstream, Target, Throttle, Upstream};
use skiff_store::ExitRecord;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// First back-off after a failed start; doubles with each failure in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Lines of an instance's log kept with a failure.
const FAILURE_LOG_LINES: usize = 20;
/// How long an app may listen only on other ports than `$PORT` before its start fails
/// with what it opened (well before the startup deadline; an app that opens an admin
/// port first has this long to open the main one).
pub const WRONG_PORT_GRACE: Duration = Duration::from_secs(5);

/// Why an instance did not become ready.
enum NotReady {
    /// Asked to stop while starting.
    Stopped,
    /// It exited before listening.
    Exited,
    /// It could not become ready.
    Failed(String),
}

impl RevisionRunner {
    /// One instance from start to end. `id` is already registered as Starting.
    pub(crate) async fn run_instance(
        self: Arc<Self>,
        id: String,
        prepared: Option<Box<dyn PreparedInstance>>,
        stop_rx: oneshot::Receiver<()>,
    ) {
        let _alive = self.ctl.alive();
        let t0 = Instant::now();
        let prepared = match prepared {
            Some(p) => Ok(p),
            None => self.prepare_one(&id, false).await,
        };
        self.refill_prepared();
        let result = match prepared {
            Ok(p) => self.launch_and_serve(p, stop_rx, t0).await,
            Err(reason) => Err(reason),
        };
        self.end(&id);
        if let Err(reason) = result {
            self.failed(&id, &reason);
        }
        self.bump();
    }

    /// Runs one instance; `Err` carries why it failed (to start, or later).
    async fn launch_and_serve(
        self: &Arc<Self>,
        prepared: Box<dyn PreparedInstance>,
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
                self.finish_record(id, None);
                return Err(e.to_string());
            }
            Err(e) => {
                self.finish_record(id, None);
                return Err(format!("launching: {e}"));
            }
        };
        // The PID is written while the app comes up, not before: a write to the store
        // (50–150 µs here, longer behind another user of its lock) is not the cold
        // start's to wait for. It is in before anything else of this instance is.
        let pid_written = instance.pid().map(|pid| {
            let ctl = Arc::clone(&self.ctl);
            let id = id.to_owned();
            tokio::task::spawn_blocking(move || ctl.db().set_instance_pid(&id, pid))
        });
        self.set_oom_counter(id, instance.oom_counter());
        let ready = self.become_ready(instance.as_ref(), &mut stop_rx).await;
        if let Some(written) = pid_written {
            if let Ok(Err(e)) = written.await {
                tracing::warn!(instance = %id, "recording the instance's PID: {e}");
            }
        }
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
                self.set_phase(id, InstancePhase::Ready);
                self.pool.add_instance(upstream);
                self.bump();
                tracing::info!(instance = %id, revision = %self.name(), "ready");
                let exec = instance.exec_probe();
                tokio::select! {
                    _ = instance.exited() => {
                        self.pool.remove_instance(id);
                        false
                    }
                    _ = &mut stop_rx => {
                        // Out of the pool, so that no request can freeze it while it stops.
                        self.pool.remove_instance(id);
                        true
                    }
                    reason = self.watch_health(id, &target, exec.as_ref()) => {
                        self.pool.remove_instance(id);
                        self.set_phase(id, InstancePhase::Stopping);
                        // Said now: its replacement may serve before it has stopped.
                        self.record_failure(id, &reason);
                        failure = Some(reason);
                        true
                    }
                }
            }
            Err(NotReady::Stopped) => true,
            Err(NotReady::Exited) => false,
            Err(NotReady::Failed(reason)) => {
                failure = Some(reason);
                true
            }
        };
        if stop_now {
            self.set_phase_if_live(id, InstancePhase::Stopping);
        }
        let grace = self.ctl.config.stop_grace;
        let exit = tokio::task::spawn_blocking(move || {
            if stop_now {
                instance.stop(grace)
            } else {
                instance.wait()
            }
        })
        .await
        .map_err(|e| format!("supervising instance {id}: {e}"))?;
        let exit = exit.map_err(|e| e.to_string())?;
        self.finish_record(id, Some(exit));
        if let Some(reason) = failure {
            return Err(reason);
        }
        if stop_now {
            return Ok(());
        }
        Err(describe_exit(&exit, self.revision.spec.memory_bytes))
    }

    /// Moves a live instance to `phase` where its life cycle allows (a probe's flip may
    /// race its stop, which wins); unlike `set_phase`, a refusal is no bug.
    fn set_phase_if_live(&self, id: &str, phase: InstancePhase) {
        if let Some(l) = self.live().get_mut(id) {
            let _ = l.phase.to(phase, id);
        }
    }

    /// Waits for the instance to listen (and pass the startup probe, if any).
    async fn become_ready(
        self: &Arc<Self>,
        instance: &dyn RunningInstance,
        stop_rx: &mut oneshot::Receiver<()>,
    ) -> Result<(Upstream, Target), NotReady> {
        let spec = &self.revision.spec;
        let port = spec.port;
        let target = match instance.target(port) {
            Ok(t) => t,
            Err(RuntimeError::Exited) => return Err(NotReady::Exited),
            Err(e) => return Err(NotReady::Failed(e.to_string())),
        };
        tokio::select! {
            r = self.wait_listening(instance, &target) => r?,
            _ = &mut *stop_rx => return Err(NotReady::Stopped),
        };
        // Without a startup probe, an HTTP readiness probe gates the first request, as
        // Knative's readiness probe does.
        let gate = spec.startup_probe.as_ref().or_else(|| {
            spec.readiness_probe
                .as_ref()
                .and_then(|p| p.http_path.as_ref())
        });
        if let Some(path) = gate {
            self.probe_until_ok(&target, path, instance, stop_rx)
                .await?;
        }
        let mut upstream = Upstream::new(instance.id(), target.clone());
        if spec.cpu_throttling {
            let throttle = instance
                .throttle()
                .map_err(|e| NotReady::Failed(e.to_string()))?;
            upstream = upstream.with_throttle(Box::new(PhaseThrottle {
                inner: throttle,
                runner: Arc::downgrade(self),
                id: instance.id().to_owned(),
            }));
        }
        Ok((upstream, target))
    }

    /// Polls the port until it accepts a connection, on a blocking thread: the first
    /// tries are sub-millisecond apart, finer than the async timer allows, because cold
    /// start is measured in them. The connection is closed at once.
    async fn wait_listening(
        &self,
        instance: &dyn RunningInstance,
        target: &Target,
    ) -> Result<(), NotReady> {
        let checks = ReadyChecks {
            target: target.clone(),
            port: self.revision.spec.port,
            exited_within: instance.exit_check(),
            listeners: instance.listeners_check(),
        };
        match tokio::task::spawn_blocking(move || checks.poll(STARTUP_TIMEOUT)).await {
            Ok(result) => result,
            Err(e) => Err(NotReady::Failed(e.to_string())),
        }
    }

    /// Runs the readiness and liveness probes of a serving instance. A failing readiness
    /// probe takes it out of the rotation until it passes again; a failing liveness probe
    /// ends this future with the reason, and the instance is restarted (with backoff).
    /// Pending forever when the spec has neither.
    async fn watch_health(&self, id: &str, target: &Target, exec: Option<&ExecProbe>) -> String {
        let spec = &self.revision.spec;
        let awake = || self.pool.hold(id);
        let readiness = spec.readiness_probe.as_ref().map(|p| {
            health::watch(p, target, exec, awake, |passing| {
                self.pool.set_serving(id, passing);
                if passing {
                    let paused = self.pool.is_paused(id);
                    self.set_phase_if_live(id, InstancePhase::Ready);
                    self.throttled(id, paused);
                } else {
                    self.set_phase_if_live(id, InstancePhase::Unready);
                    tracing::warn!(instance = %id, "readiness probe {} failing: out of the rotation", p.describe());
                }
                std::ops::ControlFlow::Continue(())
            })
        });
        let liveness = spec.liveness_probe.as_ref().map(|p| {
            health::watch(p, target, exec, awake, |passing| {
                if passing {
                    std::ops::ControlFlow::Continue(())
                } else {
                    std::ops::ControlFlow::Break(())
                }
            })
        });
        tokio::select! {
            last = or_pending(liveness) => {
                let p = spec.liveness_probe.as_ref().expect("a liveness probe ran");
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
        instance: &dyn RunningInstance,
        stop_rx: &mut oneshot::Receiver<()>,
    ) -> Result<(), NotReady> {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        let mut exited = instance.exited();
        loop {
            let last = match upstream::http_probe(target, path).await {
                Ok(code) if (200..400).contains(&code) => return Ok(()),
                Ok(code) => format!("status {code}"),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(NotReady::Failed(format!(
                    "startup probe GET {path} failed for {}s (last: {last})",
                    STARTUP_TIMEOUT.as_secs()
                )));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = &mut exited => return Err(NotReady::Exited),
                _ = &mut *stop_rx => return Err(NotReady::Stopped),
            }
        }
    }

    pub(crate) fn finish_record(&self, id: &str, exit: Option<ExitStatus>) {
        self.ctl.forget_secret_files(id);
        // Before the store frees its slot, so the address is not another's yet.
        self.ctl.gate.forget_instance(id);
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
        if let Err(e) = self
            .ctl
            .write_freeing_space(|db| db.finish_instance(id, Some(record)))
        {
            tracing::error!(instance = %id, "recording the exit: {e}");
        }
        // The last instances of a removed service take their logs with them.
        if self.is_retired() && matches!(self.ctl.db().service(self.service()), Ok(None)) {
            self.ctl.forget_logs_of_removed(self.service());
        }
    }

    /// Records a failure with the log's tail and backs off before the next start.
    fn failed(&self, id: &str, reason: &str) {
        let n = self.failures_in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
        let backoff = backoff_after(n);
        let reason = self.record_failure(id, reason);
        // Each failure is in `describe`; the log gets each new step of a run.
        if n.is_power_of_two() {
            tracing::warn!(revision = %self.name(), "{reason}; next try in {backoff:?} ({n} failures in a row)");
        }
        self.pool.fail_waiters(&reason, backoff);
    }

    /// Records why instance `id` failed, with its log's tail, as the revision's last
    /// failure; returns the reason as recorded.
    fn record_failure(&self, id: &str, reason: &str) -> String {
        let tail = crate::logs::tail_messages(&self.ctl.log_path(id), FAILURE_LOG_LINES);
        // Runtime errors name the instance already ("instance ID: …").
        let reason = if reason.starts_with(&format!("instance {id}")) {
            reason.to_owned()
        } else {
            format!("instance {id} {reason}")
        };
        if let Err(e) = self
            .ctl
            .db()
            .record_revision_failure(self.name(), &reason, &tail)
        {
            tracing::error!(revision = %self.name(), "recording a failure: {e}");
        }
        reason
    }
}

/// The backoff between starts of a failing revision.
const START_BACKOFF: Backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);

/// The wait before the next start after `failures` failures in a row: 1s, 2s, 4s, ... 30s.
pub fn backoff_after(failures: u32) -> Duration {
    START_BACKOFF.wait_after(failures)
}

/// The runtime's throttle, recording in the instance's phase when it is frozen.
struct PhaseThrottle {
    inner: Box<dyn Throttle>,
    runner: Weak<RevisionRunner>,
    id: String,
}

impl Throttle for PhaseThrottle {
    fn resume(&self) {
        self.inner.resume();
        if let Some(r) = self.runner.upgrade() {
            r.throttled(&self.id, false);
        }
    }

    fn pause(&self) {
        self.inner.pause();
        if let Some(r) = self.runner.upgrade() {
            r.throttled(&self.id, true);
        }
    }
}

/// The future's output, or never when there is no future.
async fn or_pending<F: std::future::Future>(future: Option<F>) -> F::Output {
    match future {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// How long a start may be refused before the supervisor looks at what the app listens
/// on instead, and how often it looks then.
const LOOK_AFTER: Duration = Duration::from_secs(1);
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// What the blocking thread that waits for an app to listen needs.
struct ReadyChecks {
    target: Target,
    port: u16,
    exited_within: ExitCheck,
    listeners: ListenersCheck,
}

impl ReadyChecks {
    /// Polls until the app accepts a connection on its port, it exits, it has listened
    /// only elsewhere for [`WRONG_PORT_GRACE`], or the time is up.
    fn poll(mut self, timeout: Duration) -> Result<(), NotReady> {
        let start = Instant::now();
        let mut elsewhere = Vec::new();
        let mut elsewhere_since: Option<Instant> = None;
        let mut last_look: Option<Instant> = None;
        let mut pause = Duration::from_micros(100);
        loop {
            if upstream::connect_blocking(&self.target).is_ok() {
                return Ok(());
            }
            let now = Instant::now();
            if now - start >= LOOK_AFTER && last_look.is_none_or(|t| now - t >= LOOK_EVERY) {
                last_look = Some(now);
                elsewhere = (self.listeners)();
                elsewhere_since = match elsewhere.is_empty() {
                    true => None,
                    false => elsewhere_since.or(Some(now)),
                };
            }
            let wrong_for = elsewhere_since.map_or(Duration::ZERO, |t| now - t);
            if wrong_for >= WRONG_PORT_GRACE || now - start >= timeout {
                return Err(NotReady::Failed(not_listening(
                    self.port, &elsewhere, timeout,
                )));
            }
            if (self.exited_within)(pause) {
                return Err(NotReady::Exited);
            }
            pause = (pause * 3 / 2).min(Duration::from_millis(20));
        }
    }
}

/// Why an app is not ready: it listens elsewhere, or not at all.
fn not_listening(port: u16, elsewhere: &[String], timeout: Duration) -> String {
    if elsewhere.is_empty() {
        return format!(
            "the app did not listen on port {port} within {}s",
            timeout.as_secs()
        );
    }
    format!(
        "the app listens on {} but not on port {port} ($PORT) at 127.0.0.1 or 0.0.0.0",
        elsewhere.join(", ")
    )
}

/// `SERVICE-xxxxxx` when the name leaves room, else `i` and 12 hex digits.
pub fn instance_id(service: &str) -> String {
    if service.len() <= 24 {
        format!("{service}-{}", random_hex(3))
    } else {
        format!("i{}", random_hex(6))
    }
}

/// `bytes` random bytes as hex digits (ids, incarnations, in-memory tokens).
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the kernel's random source is available");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A short reason for an unexpected exit.
pub fn describe_exit(exit: &ExitStatus, memory: u64) -> String {
    if exit.oom_killed {
        return format!("ran out of memory (limit {} MiB)", memory >> 20);
    }
    match (exit.code, exit.signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_thirty() {
        let secs: Vec<u64> = (1..=8).map(|n| backoff_after(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn an_app_on_the_wrong_port_is_told_by_what_it_opened() {
        // A port nobody listens on: every connect is refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target::Address(closed.local_addr().unwrap());
        drop(closed);
        let checks = ReadyChecks {
            target,
            port: 8080,
            exited_within: Box::new(|wait| {
                std::thread::sleep(wait.min(Duration::from_millis(5)));
                false
            }),
            listeners: Box::new(|| vec!["[::1]:8080".into(), "127.0.0.1:3000".into()]),
        };
        let started = Instant::now();
        let Err(NotReady::Failed(why)) = checks.poll(LOOK_AFTER + Duration::from_millis(300))
        else {
            panic!("listening elsewhere is no readiness");
        };
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            why,
            "the app listens on [::1]:8080, 127.0.0.1:3000 but not on port 8080 ($PORT) \
             at 127.0.0.1 or 0.0.0.0"
        );
    }

    #[test]
    fn exits_are_described_for_people() {
        let e = |code, signal, oom_killed| ExitStatus {
            code,
            signal,
            oom_killed,
        };
        assert_eq!(
            describe_exit(&e(Some(3), None, false), 0),
            "exited with code 3"
        );
        assert_eq!(
            describe_exit(&e(None, Some(9), false), 0),
            "was killed by signal 9"
        );
        assert_eq!(
            describe_exit(&e(None, Some(9), true), 64 << 20),
            "ran out of memory (limit 64 MiB)"
        );
    }

    #[test]
    fn instance_ids_carry_the_service_when_it_fits() {
        let id = instance_id("hello");
        assert!(id.starts_with("hello-") && id.len() == 12, "{id}");
        let long = instance_id(&"x".repeat(30));
        assert!(long.starts_with('i') && long.len() == 13, "{long}");
        assert_ne!(instance_id("a"), instance_id("a"));
    }
}
