//! A runtime without a kernel: an "instance" is a loopback listener (so readiness and
//! probes are real TCP and HTTP) and a flag for its exit. Every call is recorded with the
//! time on tokio's clock, so tests with paused time can assert when things happened.

// Each test binary uses its own part of this.
#![allow(dead_code)]

use skiff_control::documents::DeployRequest;
use skiff_control::runtime::{
    BoxFuture, ExitCheck, ExitStatus, InstancePlan, ListenersCheck, PreparedInstance,
    RunningInstance, Runtime, RuntimeError,
};
use skiff_control::{Command, Control, ControlConfig, Precondition, ScalingDefaults};
use skiff_core::ServiceSpec;
use skiff_router::{Target, Throttle};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How the next instances behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Listens and answers probes with 200 (or 500 when made sick).
    Healthy,
    /// Exits with code 1 at once, before listening.
    Crashes,
    /// The runtime cannot start it.
    LaunchFails,
    /// The runtime cannot even prepare its sandbox (as on a host out of descriptors).
    PrepareFails,
}

/// What the runtime was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Prepare(String),
    /// A prepared sandbox let go without a launch.
    Discard(String),
    Launch(String),
    Stop(String),
    Pause(String),
    Resume(String),
    /// An exec probe's command line.
    Exec(String),
}

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<(Instant, Call)>>,
    behaviour: Mutex<Option<Behaviour>>,
    sick: AtomicBool,
    running: AtomicU32,
    /// Connections the instances' listeners accepted, and those of them closed by the
    /// other end before it sent a byte.
    accepted: AtomicU32,
    closed_silently: AtomicU32,
    /// Preparations wait while this is set.
    prepares_held: AtomicBool,
    /// The secrets' variables each instance was prepared with.
    secret_env: Mutex<std::collections::HashMap<String, Vec<String>>>,
}

impl Shared {
    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push((Instant::now(), call));
    }
}

/// The fake runtime; clones share their record.
#[derive(Clone, Default)]
pub struct FakeRuntime(Arc<Shared>);

impl FakeRuntime {
    pub fn set(&self, b: Behaviour) {
        *self.0.behaviour.lock().unwrap() = Some(b);
    }

    fn behaviour(&self) -> Behaviour {
        self.0
            .behaviour
            .lock()
            .unwrap()
            .unwrap_or(Behaviour::Healthy)
    }

    /// Makes every instance's probes fail (`true`) or pass.
    pub fn set_sick(&self, sick: bool) {
        self.0.sick.store(sick, Ordering::SeqCst);
    }

    /// The calls so far, with their times.
    pub fn calls(&self) -> Vec<(Instant, Call)> {
        self.0.calls.lock().unwrap().clone()
    }

    /// The times of the calls that match.
    pub fn times(&self, pick: impl Fn(&Call) -> bool) -> Vec<Instant> {
        self.calls()
            .into_iter()
            .filter(|(_, c)| pick(c))
            .map(|(t, _)| t)
            .collect()
    }

    pub fn launches(&self) -> usize {
        self.times(|c| matches!(c, Call::Launch(_))).len()
    }

    pub fn stops(&self) -> usize {
        self.times(|c| matches!(c, Call::Stop(_))).len()
    }

    /// Connections the instances accepted.
    pub fn accepted(&self) -> u32 {
        self.0.accepted.load(Ordering::SeqCst)
    }

    /// Connections closed by the control plane before it sent a byte.
    pub fn closed_silently(&self) -> u32 {
        self.0.closed_silently.load(Ordering::SeqCst)
    }

    /// Instances launched and not yet ended.
    pub fn running(&self) -> u32 {
        self.0.running.load(Ordering::SeqCst)
    }

    /// Makes preparations wait (`true`) until let go again.
    pub fn hold_prepares(&self, held: bool) {
        self.0.prepares_held.store(held, Ordering::SeqCst);
    }

    /// The secrets' variables instance `id` was prepared with.
    pub fn secret_env(&self, id: &str) -> Vec<String> {
        let envs = self.0.secret_env.lock().unwrap();
        envs.get(id).cloned().unwrap_or_default()
    }
}

impl Runtime for FakeRuntime {
    fn prepare(
        &self,
        plan: InstancePlan,
    ) -> BoxFuture<'_, Result<Box<dyn PreparedInstance>, RuntimeError>> {
        self.0.record(Call::Prepare(plan.id.clone()));
        let env = plan.secrets.env.clone();
        self.0
            .secret_env
            .lock()
            .unwrap()
            .insert(plan.id.clone(), env);
        let me = self.clone();
        Box::pin(async move {
            while me.0.prepares_held.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if me.behaviour() == Behaviour::PrepareFails {
                return Err(RuntimeError::Failed(format!(
                    "instance {}: the fake runtime is out of descriptors",
                    plan.id
                )));
            }
            Ok(Box::new(FakePrepared {
                id: plan.id,
                rt: me,
                launched: false,
            }) as _)
        })
    }
}

struct FakePrepared {
    id: String,
    rt: FakeRuntime,
    launched: bool,
}

impl Drop for FakePrepared {
    fn drop(&mut self) {
        if !self.launched {
            self.rt.0.record(Call::Discard(self.id.clone()));
        }
    }
}

impl PreparedInstance for FakePrepared {
    fn id(&self) -> &str {
        &self.id
    }

    fn launch(mut self: Box<Self>) -> Result<Box<dyn RunningInstance>, RuntimeError> {
        let behaviour = self.rt.behaviour();
        if behaviour == Behaviour::LaunchFails {
            // Worded as the Linux runtime words its errors: naming the instance.
            return Err(RuntimeError::Failed(format!(
                "instance {}: the fake runtime refuses",
                self.id
            )));
        }
        self.launched = true;
        self.rt.0.record(Call::Launch(self.id.clone()));
        self.rt.0.running.fetch_add(1, Ordering::SeqCst);
        let (exited, _) = watch::channel(false);
        let running = FakeRunning {
            id: self.id.clone(),
            rt: self.rt.clone(),
            exited: Arc::new(exited),
            listener: None,
            counted: AtomicBool::new(true),
        };
        if behaviour == Behaviour::Crashes {
            running.exit();
        }
        let mut running = running;
        if behaviour == Behaviour::Healthy {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
            serve_probes(
                &listener,
                Arc::clone(&self.rt.0),
                Arc::clone(&running.exited),
            );
            running.listener = Some(listener);
        }
        Ok(Box::new(running))
    }
}

/// Answers HTTP requests on the instance's listener (200, or 500 while sick) until the
/// instance exits.
fn serve_probes(listener: &TcpListener, shared: Arc<Shared>, exited: Arc<watch::Sender<bool>>) {
    let listener = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if *exited.borrow() {
                return;
            }
            let Ok(mut conn) = conn else { return };
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut buf = [0u8; 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) if seen.is_empty() => {
                            shared.closed_silently.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let status = if shared.sick.load(Ordering::SeqCst) {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            });
        }
    });
}

struct FakeRunning {
    id: String,
    rt: FakeRuntime,
    exited: Arc<watch::Sender<bool>>,
    listener: Option<TcpListener>,
    counted: AtomicBool,
}

impl FakeRunning {
    fn exit(&self) {
        self.exited.send_replace(true);
        if self.counted.swap(false, Ordering::SeqCst) {
            self.rt.0.running.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl RunningInstance for FakeRunning {
    fn id(&self) -> &str {
        &self.id
    }

    /// Exec probes pass unless the runtime is made sick, as its HTTP answers do.
    fn exec_probe(&self) -> Option<skiff_control::runtime::ExecProbe> {
        let shared = Arc::clone(&self.rt.0);
        Some(Arc::new(move |argv: &[String], _timeout| {
            shared.record(Call::Exec(argv.join(" ")));
            if shared.sick.load(Ordering::SeqCst) {
                Err("exited with code 1".into())
            } else {
                Ok(())
            }
        }))
    }

    fn pid(&self) -> Option<u32> {
        None
    }

    fn target(&self, _port: u16) -> Result<Target, RuntimeError> {
        match &self.listener {
            Some(l) if !*self.exited.borrow() => Ok(Target::Address(l.local_addr().unwrap())),
            // Gone, or never listening: a port nobody listens on.
            _ => Ok(Target::Address("127.0.0.1:1".parse().unwrap())),
        }
    }

    fn exit_check(&self) -> ExitCheck {
        let exited = self.exited.subscribe();
        Box::new(move |wait| {
            if *exited.borrow() {
                return true;
            }
            std::thread::sleep(wait.min(Duration::from_millis(1)));
            *exited.borrow()
        })
    }

    fn listeners_check(&self) -> ListenersCheck {
        Box::new(Vec::new)
    }

    fn exited(&self) -> BoxFuture<'static, ()> {
        let mut rx = self.exited.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|e| *e).await;
        })
    }

    fn throttle(&self) -> Result<Box<dyn Throttle>, RuntimeError> {
        Ok(Box::new(FakeThrottle {
            id: self.id.clone(),
            rt: self.rt.clone(),
        }))
    }

    fn stop(&mut self, _grace: Duration) -> Result<ExitStatus, RuntimeError> {
        self.rt.0.record(Call::Stop(self.id.clone()));
        let was_running = !*self.exited.borrow();
        self.exit();
        Ok(ExitStatus {
            code: if was_running { None } else { Some(1) },
            signal: was_running.then_some(15),
            oom_killed: false,
        })
    }

    fn wait(&mut self) -> Result<ExitStatus, RuntimeError> {
        while !*self.exited.borrow() {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(ExitStatus {
            code: Some(1),
            signal: None,
            oom_killed: false,
        })
    }
}

impl Drop for FakeRunning {
    fn drop(&mut self) {
        self.exit();
    }
}

struct FakeThrottle {
    id: String,
    rt: FakeRuntime,
}

impl Throttle for FakeThrottle {
    fn resume(&self) {
        self.rt.0.record(Call::Resume(self.id.clone()));
    }

    fn pause(&self) {
        self.rt.0.record(Call::Pause(self.id.clone()));
    }
}

/// A control plane over a real store and image store in a temporary directory, with the
/// fake runtime, and the image `app:1` packed there.
pub struct Harness {
    pub ctl: Arc<Control>,
    pub rt: FakeRuntime,
    _home: tempfile::TempDir,
}

impl Harness {
    /// The data directory (the database is `skiff.db` there).
    pub fn home(&self) -> &std::path::Path {
        self._home.path()
    }

    pub fn new() -> Harness {
        Harness::with(|_| {})
    }

    pub fn with(tune: impl FnOnce(&mut ControlConfig)) -> Harness {
        let home = tempfile::tempdir().unwrap();
        let mut db = skiff_store::Store::open(&home.path().join("skiff.db")).unwrap();
        let images = skiff_image::ImageStore::open(home.path()).unwrap();
        let rootfs = home.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::write(rootfs.join("app"), "#!/bin/true\n").unwrap();
        images
            .pack(
                &mut db,
                &rootfs,
                &skiff_image::PackOptions {
                    tag: Some("app:1".parse().unwrap()),
                    entrypoint: vec!["/app".into()],
                    ..Default::default()
                },
            )
            .unwrap();
        let mut config = ControlConfig {
            domain: "localhost".into(),
            ingress_port: 8080,
            queue_depth: 100,
            revisions_kept: 20,
            stop_grace: Duration::from_secs(1),
            prepare_sandboxes: false,
            scaling: ScalingDefaults::default(),
            start_time: 0,
            logs_dir: home.path().join("logs"),
            home: home.path().to_owned(),
            own_registry: None,
            secrets_key: Arc::new(skiff_secrets::MasterKey::from_bytes(&[7; 32])),
        };
        tune(&mut config);
        let rt = FakeRuntime::default();
        let router = skiff_router::Router::new("localhost");
        let ctl = Control::new(config, db, images, Arc::new(rt.clone()), router);
        Harness {
            ctl,
            rt,
            _home: home,
        }
    }

    /// Deploys `spec` (image `app:1` unless set) as `service`.
    pub async fn deploy(
        &self,
        service: &str,
        spec: ServiceSpec,
    ) -> Result<skiff_control::documents::Deployed, skiff_control::ControlError> {
        self.deploy_named(service, spec, None).await
    }

    /// Deploys `spec` as `service`, naming the revision `name` when given.
    pub async fn deploy_named(
        &self,
        service: &str,
        spec: ServiceSpec,
        name: Option<&str>,
    ) -> Result<skiff_control::documents::Deployed, skiff_control::ControlError> {
        let answer = self
            .ctl
            .execute(Command::Deploy {
                service: service.into(),
                request: DeployRequest {
                    spec,
                    traffic: None,
                    no_traffic: false,
                    tag: None,
                    revision_name: name.map(str::to_owned),
                },
                precondition: Precondition::NONE,
            })
            .await?;
        match answer {
            skiff_control::Answer::Deployed(d) => Ok(d),
            other => panic!("a deploy answers Deployed, not {other:?}"),
        }
    }

    pub async fn describe(
        &self,
        service: &str,
    ) -> Result<skiff_control::documents::ServiceDetail, skiff_control::ControlError> {
        match self
            .ctl
            .execute(Command::Describe {
                service: service.into(),
            })
            .await?
        {
            skiff_control::Answer::Service(d) => Ok(*d),
            other => panic!("describe answers Service, not {other:?}"),
        }
    }

    /// The pool the service's main route picks.
    pub fn pool(&self, service: &str) -> Arc<skiff_router::RevisionPool> {
        let route = self
            .ctl
            .router()
            .route(service)
            .expect("the service is routed");
        Arc::clone(route.pick())
    }

    /// The phases of the service's live instances, as describe shows them.
    pub async fn states(&self, service: &str) -> Vec<String> {
        self.describe(service)
            .await
            .unwrap()
            .instances
            .into_iter()
            .filter(|i| i.finished_at.is_none() && i.state != "exited" && i.state != "lost")
            .map(|i| i.state)
            .collect()
    }
}

/// A spec for `app:1` with `tune` applied. It deploys from zero (an explicit initial
/// scale of 0: no instance proves a first revision) unless `tune` says otherwise.
pub fn spec(tune: impl FnOnce(&mut ServiceSpec)) -> ServiceSpec {
    let mut s = ServiceSpec::new("app:1");
    s.autoscaling.initial_scale = Some(0);
    tune(&mut s);
    s
}

/// Polls `check` every 10 ms (of tokio's clock) until it holds, for at most `limit`.
pub async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
