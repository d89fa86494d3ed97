//! skiff's control plane as a library: it takes typed [`Command`]s (deploy, set traffic,
//! roll back, remove, list, describe), keeps the store and the router's routes in step
//! with them, runs each revision's reconcile loop, and supervises every instance through
//! one [`InstancePhase`] state machine, reaching the sandboxes only through the
//! [`Runtime`] trait.
//!
//! It must not know HTTP: no status codes, no framework types. The daemon's API maps
//! requests to commands and [`ControlError`]s to statuses in one place. It forbids unsafe
//! code: what needs it lives in `skiff-sandbox` and `skiff-kernel`.
#![forbid(unsafe_code)]

pub mod audit;
mod clock;
mod command;
pub mod configmaps;
mod deploy;
mod describe;
pub mod documents;
mod error;
mod gate;
mod gc;
mod health;
pub mod invocations;
pub mod linux;
pub mod listening;
pub mod logs;
mod phase;
mod reconciler;
pub mod revision;
mod runner;
mod runner_table;
pub mod runtime;
mod scaling;
pub mod secrets;
mod space;
mod supervisor;
pub mod tokens;
mod traffic;
pub mod triggers;
mod warm;

pub use clock::unix_now;
pub use command::{Answer, Command, Precondition};
pub use error::ControlError;
pub use phase::{InstancePhase, PhaseError};
pub use revision::{merged_env, Revision};
pub use runner::{Outcome, RevisionRunner, STARTUP_TIMEOUT};
pub use runtime::{Runtime, RuntimeError};
pub use scaling::ScalingDefaults;
pub use supervisor::{backoff_after, describe_exit};

use runner::RevisionRunner as Runner;
use skiff_image::ImageStore;
use skiff_router::Router;
use skiff_store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// How the control plane behaves: the daemon's settings.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Services answer at `NAME.<domain>`.
    pub domain: String,
    /// The ingress port, for the URLs shown.
    pub ingress_port: u16,
    /// Requests that may wait for an instance, per revision.
    pub queue_depth: usize,
    /// Revisions kept per service (those with traffic or a tag are always kept).
    pub revisions_kept: usize,
    /// Grace between the polite and the forced stop of an instance.
    pub stop_grace: Duration,
    /// Keep one prepared sandbox per running revision.
    pub prepare_sandboxes: bool,
    /// Autoscaler defaults that services override.
    pub scaling: ScalingDefaults,
    /// The supervising process's start time, recorded with its instances (so a later
    /// daemon can tell its own instances from a dead one's).
    pub start_time: u64,
    /// Where instances' logs go (`ID.log`).
    pub logs_dir: PathBuf,
    /// The data directory, where registry credentials and CAs are kept.
    pub home: PathBuf,
    /// The daemon's own registry (`host:port`): images named there are local already.
    pub own_registry: Option<String>,
    /// The key secrets are sealed under.
    pub secrets_key: Arc<skiff_secrets::MasterKey>,
}

/// The control plane: the store, the image store, the runtime and the router, and the
/// runners of the revisions at work.
pub struct Control {
    config: ControlConfig,
    db: Mutex<Store>,
    images: ImageStore,
    runtime: Arc<dyn Runtime>,
    router: Router,
    shutting_down: AtomicBool,
    runners: Mutex<runner_table::RunnerTable<Arc<Runner>>>,
    active: watch::Sender<usize>,
    /// Serialises the commands that write (deploy, traffic, rollback, remove): each
    /// reads the store and the routing table, then writes both.
    write_lock: tokio::sync::Mutex<()>,
    /// Space let go when the disk is full, for the writes that free it.
    reserve: space::SpaceReserve,
    /// The logs directory's watch while someone follows logs.
    log_watch: Mutex<std::sync::Weak<logs::LogWatch>>,
    /// Each instance's secret files, kept to write new versions into.
    secret_files: Mutex<HashMap<String, Vec<secrets::LiveSecretFiles>>>,
    /// What the router asks about private services' callers.
    gate: Arc<gate::ServiceGate>,
    /// Bumped by every secret or config map write that changes what `latest` means, so
    /// a sandbox being prepared across one knows it may hold the old values.
    secrets_generation: std::sync::atomic::AtomicU64,
    /// Each service's delivery policy for async invocations.
    delivery_policies: invocations::Policies,
    /// What delivers them, once started.
    dispatcher: std::sync::OnceLock<Arc<invocations::Dispatcher>>,
    /// Where schedules and topics put the invocations they make (set with the dispatcher).
    emitter: std::sync::OnceLock<invocations::Emitter>,
    /// Wakes the scheduler after a change; each schedule's next run.
    scheduler: triggers::Scheduler,
    /// Each topic's subscriptions.
    topics: triggers::Topics,
}

/// Counts a task that must finish before the control plane has shut down.
pub(crate) struct ActiveGuard(watch::Sender<usize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Control {
    /// A control plane over `db`, `images` and `runtime`, routing through `router`.
    pub fn new(
        config: ControlConfig,
        db: Store,
        images: ImageStore,
        runtime: Arc<dyn Runtime>,
        router: Router,
    ) -> Arc<Control> {
        let reserve = space::SpaceReserve::new(&config.home);
        reserve.ensure();
        let gate = Arc::new(gate::ServiceGate::default());
        match db.tokens() {
            Ok(tokens) => gate.load_tokens(tokens),
            Err(e) => tracing::error!("loading tokens for private services: {e}"),
        }
        router.set_gate(Arc::clone(&gate) as Arc<dyn skiff_router::Gate>);
        Arc::new(Control {
            gate,
            secrets_generation: std::sync::atomic::AtomicU64::new(0),
            delivery_policies: Default::default(),
            dispatcher: std::sync::OnceLock::new(),
            emitter: std::sync::OnceLock::new(),
            scheduler: Default::default(),
            topics: Default::default(),
            reserve,
            log_watch: Mutex::new(std::sync::Weak::new()),
            secret_files: Mutex::new(HashMap::new()),
            config,
            db: Mutex::new(db),
            images,
            runtime,
            router,
            shutting_down: AtomicBool::new(false),
            runners: Mutex::default(),
            active: watch::channel(0).0,
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// The router it keeps routes in.
    pub fn router(&self) -> &Router {
        &self.router
    }

    pub(crate) fn db(&self) -> MutexGuard<'_, Store> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn alive(&self) -> ActiveGuard {
        self.active.send_modify(|n| *n += 1);
        ActiveGuard(self.active.clone())
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    fn runners(&self) -> MutexGuard<'_, runner_table::RunnerTable<Arc<Runner>>> {
        self.runners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets `runner` once it has ended, unless a newer runner of its revision (the
    /// revision got traffic again) took its place.
    pub(crate) fn forget_runner(&self, runner: &Runner) {
        self.runners()
            .remove_if(runner.name(), |r| std::ptr::eq(r.as_ref(), runner));
    }

    /// The runner of `revision`, while it runs.
    pub fn runner(&self, revision: &str) -> Option<Arc<Runner>> {
        self.runners().get(revision).cloned()
    }

    /// The runners of a service's revisions.
    pub(crate) fn runners_of(&self, service: &str) -> Vec<Arc<Runner>> {
        self.runners().of_service(service)
    }

    pub(crate) fn add_runner(&self, runner: Arc<Runner>) {
        let (service, revision) = (runner.service().to_owned(), runner.name().to_owned());
        self.runners().insert(&service, &revision, runner);
    }

    /// Where instance `id`'s log goes.
    pub(crate) fn log_path(&self, id: &str) -> PathBuf {
        self.config.logs_dir.join(format!("{id}.log"))
    }

    /// The URL of a service (or of a tag's host label).
    pub fn url(&self, label: &str) -> String {
        // Pushed, not `format!`ed: `skiff ls` makes one per service.
        let (domain, port) = (&self.config.domain, self.config.ingress_port);
        let mut url = String::with_capacity("http://.:65535/".len() + label.len() + domain.len());
        url.push_str("http://");
        url.push_str(label);
        url.push('.');
        url.push_str(domain);
        if port != 80 {
            use std::fmt::Write as _;
            let _ = write!(url, ":{port}");
        }
        url.push('/');
        url
    }

    /// Stops every instance gracefully and waits for them (daemon shutdown). Run after
    /// the ingress stopped taking requests.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let runners: Vec<_> = self.runners().values().cloned().collect();
        for r in &runners {
            r.stop_all();
        }
        for r in &runners {
            r.discard_prepared().await;
        }
        let mut active = self.active.subscribe();
        let _ = active.wait_for(|n| *n == 0).await;
    }
}
