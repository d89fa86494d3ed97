//! Starting sandboxes off the async runtime, on threads that live as long as the daemon.
//!
//! Two reasons for dedicated threads: `Sandbox::start` blocks (clone, cgroup, mounts,
//! exec), and an instance's parent-death signal fires when the *thread* that cloned it
//! exits, so that thread must never be a pool worker that may retire.

use skiff_sandbox::{Prepared, Sandbox, SandboxError, SandboxSpec};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Job = (SandboxSpec, oneshot::Sender<Result<Prepared, SandboxError>>);

/// A handle to the spawner threads.
#[derive(Clone)]
pub struct Spawner {
    jobs: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts `threads` spawner threads sharing `sandbox`.
    pub fn new(sandbox: Arc<Sandbox>, threads: usize) -> std::io::Result<Spawner> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let sandbox = Arc::clone(&sandbox);
            std::thread::Builder::new()
                .name(format!("skiff-spawn-{n}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((spec, reply)) = job else { return };
                    // If the asker is gone, dropping the sandbox removes it again.
                    let _ = reply.send(sandbox.prepare(&spec));
                })?;
        }
        Ok(Spawner { jobs: tx })
    }

    /// Prepares a sandbox (everything but the exec); see `Sandbox::prepare`.
    pub async fn prepare(&self, spec: SandboxSpec) -> Result<Prepared, SandboxError> {
        let (tx, rx) = oneshot::channel();
        let id = spec.id.clone();
        let gone = || SandboxError::Host(format!("instance {id}: the spawner threads are gone"));
        self.jobs.send((spec, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}
