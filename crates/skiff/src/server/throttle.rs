//! CPU only while serving: the router's [`Throttle`] for one instance, backed by its
//! cgroup's freezer. Owns the freezer handle; when to freeze is the pool's decision.

use skiff_router::Throttle;
use skiff_sandbox::{Freezer, Instance};

/// Freezes one instance's cgroup while the pool says it has no work.
pub struct FreezeThrottle {
    id: String,
    freezer: Freezer,
}

impl FreezeThrottle {
    /// The throttle of `instance`; fails when its cgroup has no freezer.
    pub fn new(instance: &Instance) -> Result<FreezeThrottle, String> {
        let cgroup = instance
            .cgroup()
            .ok_or("CPU throttling needs the instance's cgroup, and it has none")?;
        let freezer = Freezer::open(cgroup)
            .map_err(|e| format!("CPU throttling needs the cgroup freezer: {e}"))?;
        Ok(FreezeThrottle {
            id: instance.id().to_owned(),
            freezer,
        })
    }
}

impl Throttle for FreezeThrottle {
    fn resume(&self) {
        if let Err(e) = self.freezer.thaw() {
            // The request will wait for its timeout: say why.
            tracing::error!(instance = %self.id, "thawing: {e}");
        }
    }

    fn pause(&self) {
        if let Err(e) = self.freezer.freeze() {
            tracing::warn!(instance = %self.id, "freezing: {e}");
        }
    }
}
