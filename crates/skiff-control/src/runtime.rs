//! The runtime seam: what the control plane needs from whatever runs instances. The
//! reconciler and the supervisor speak only to these traits; the Linux sandbox
//! ([`crate::linux`]) is one implementation, a fake in the tests is another, and a second
//! isolation backend (gVisor's runsc, a microVM) is a third, added without touching them.
//!
//! An instance goes through three objects: [`Runtime::prepare`] does all the setup that
//! can happen before it is needed (a warm pool keeps one ahead), [`PreparedInstance::launch`]
//! starts the app, and [`RunningInstance`] is the live process: where it listens, when it
//! exits, how to pause it and how to stop it.

use crate::revision::Revision;
use skiff_router::{Target, Throttle};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed future, for trait methods that must stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Blocks up to the given time for an instance to exit; whether it did. Owned, so a
/// blocking thread can keep it.
pub type ExitCheck = Box<dyn Fn(Duration) -> bool + Send>;

/// Lists what an instance listens on (`ADDR:PORT`), for telling a user whose app opened
/// another port than `$PORT`. May be slow (it walks the kernel's socket tables): called
/// only once a start is late. Owned, so a blocking thread can keep it.
pub type ListenersCheck = Box<dyn FnMut() -> Vec<String> + Send>;

/// Runs a command inside an instance (an exec probe) and says whether it passed, within
/// the given time. Blocks: call it off the async threads.
pub type ExecProbe =
    std::sync::Arc<dyn Fn(&[String], Duration) -> Result<(), String> + Send + Sync>;

/// Reads a running instance's OOM kill count. Owned, so `describe` can call it.
pub type OomCounter = Box<dyn Fn() -> u64 + Send + Sync>;

/// A runtime's failure, in words for the service's owner.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The instance's process has already exited.
    #[error("the instance exited")]
    Exited,
    /// Anything else, with the reason.
    #[error("{0}")]
    Failed(String),
}

/// How an instance's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// Its exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer ended it.
    pub oom_killed: bool,
}

/// One instance to prepare: its id, where its output goes, and what it runs.
#[derive(Clone, Debug)]
pub struct InstancePlan {
    pub id: String,
    pub log_path: PathBuf,
    pub revision: Arc<Revision>,
    /// Its network slot, unique among live instances (from [`Runtime::network_slots`]).
    pub slot: u32,
    /// Prepared ahead of demand, to make the next cold start shorter: a cache, which
    /// must leave room (descriptors, memory) for instances that serve requests.
    pub ahead: bool,
    /// The revision's secrets, resolved for this instance.
    pub secrets: crate::secrets::InstanceSecrets,
}

/// Something that runs instances of revisions.
pub trait Runtime: Send + Sync + 'static {
    /// Sets up an instance short of starting its app. Dropping the result undoes it.
    fn prepare(
        &self,
        plan: InstancePlan,
    ) -> BoxFuture<'_, Result<Box<dyn PreparedInstance>, RuntimeError>>;

    /// Whether the host has room for one more instance (prepared `ahead` of demand, or
    /// to start now), checked before anything is registered or made for it; why not.
    fn room_for_one(&self, _ahead: bool) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// The address an instance in network slot `slot` calls other services from, when
    /// its runtime gives instances addresses of their own.
    fn instance_address(&self, _slot: u32) -> Option<std::net::IpAddr> {
        None
    }

    /// The host id that is 0 inside an instance of `revision` in network slot `slot`:
    /// the start of its user namespace's range, or 0 when it runs with host ids.
    fn host_id_base(&self, _slot: u32, _revision: &crate::revision::Revision) -> u32 {
        0
    }

    /// The network slots its instances may take (one each, while they live).
    fn network_slots(&self) -> std::ops::Range<u32> {
        0..skiff_sandbox::SLOTS
    }
}

/// An instance set up and waiting to start.
pub trait PreparedInstance: Send {
    /// Its id, as planned.
    fn id(&self) -> &str;
    /// Starts the app. May block: the supervisor calls it off the async threads.
    fn launch(self: Box<Self>) -> Result<Box<dyn RunningInstance>, RuntimeError>;
}

/// A started instance.
pub trait RunningInstance: Send + Sync {
    /// Its id.
    fn id(&self) -> &str;
    /// The host's process id of its app, if it has one (for the record).
    fn pid(&self) -> Option<u32>;
    /// Where its app listens on `port`; [`RuntimeError::Exited`] once it is gone.
    fn target(&self, port: u16) -> Result<Target, RuntimeError>;
    /// A check of whether it exits within a given time, for a blocking thread.
    fn exit_check(&self) -> ExitCheck;
    /// A look at what its app listens on, for a blocking thread (see [`ListenersCheck`]).
    fn listeners_check(&self) -> ListenersCheck;
    /// Resolves once it has exited.
    fn exited(&self) -> BoxFuture<'static, ()>;
    /// A reading of how many of its processes the OOM killer has ended so far (a worker
    /// of a serving app may die while the app goes on), if the runtime can tell.
    fn oom_counter(&self) -> Option<OomCounter> {
        None
    }
    /// A way to run exec probes inside it, if the runtime has one.
    fn exec_probe(&self) -> Option<ExecProbe> {
        None
    }
    /// A way to take its CPU away while it has no work (CPU throttling).
    fn throttle(&self) -> Result<Box<dyn Throttle>, RuntimeError>;
    /// Stops it: a polite signal, then after `grace` a forced one. Blocks until it ended.
    fn stop(&mut self, grace: Duration) -> Result<ExitStatus, RuntimeError>;
    /// Waits for it to end by itself. Blocks.
    fn wait(&mut self) -> Result<ExitStatus, RuntimeError>;
}
