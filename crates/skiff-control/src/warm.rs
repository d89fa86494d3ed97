//! The sandbox prepared ahead: each running revision keeps one instance Prepared (set up
//! short of starting its app), so that the next cold start only has to launch it. The
//! reconciler takes it when it starts an instance; this module makes the next one, and
//! lets it go when the revision retires or the daemon stops.

use crate::phase::InstancePhase;
use crate::runner::{Live, RevisionRunner};
use crate::runtime::{InstancePlan, PreparedInstance};
use skiff_store::NewInstance;
use std::sync::Arc;

impl RevisionRunner {
    /// Registers instance `id` and prepares its sandbox; on failure, why.
    pub(crate) async fn prepare_one(&self, id: &str) -> Result<Box<dyn PreparedInstance>, String> {
        let log_path = self.ctl.log_path(id);
        let registered = self.ctl.db().create_instance(
            &NewInstance {
                id: id.to_owned(),
                image_digest: self.revision.image_digest.clone(),
                supervisor_pid: std::process::id(),
                supervisor_start: self.ctl.config.start_time,
                log_path: log_path.display().to_string(),
                service: Some((self.service().to_owned(), self.name().to_owned())),
            },
            self.ctl.runtime.network_slots(),
        );
        let slot = match registered {
            Ok(slot) => slot,
            Err(e) => return Err(format!("registering instance {id}: {e}")),
        };
        let plan = InstancePlan {
            id: id.to_owned(),
            log_path,
            revision: Arc::clone(&self.revision),
            slot,
        };
        match self.ctl.runtime.prepare(plan).await {
            Ok(p) => Ok(p),
            Err(e) => {
                self.finish_record(id, None);
                Err(e.to_string())
            }
        }
    }

    fn wants_prepared(&self) -> bool {
        self.ctl.config.prepare_sandboxes && !self.is_retired() && !self.ctl.is_shutting_down()
    }

    /// Prepares the next instance's sandbox in the background, unless one is prepared or
    /// being prepared already.
    pub(crate) fn refill_prepared(self: &Arc<Self>) {
        if !self.wants_prepared() {
            return;
        }
        let id = {
            let mut live = self.live();
            if live
                .values()
                .any(|l| matches!(l.phase, InstancePhase::Preparing | InstancePhase::Prepared))
            {
                return;
            }
            // Made only once one is wanted: this runs on every tick of the loop.
            let id = crate::supervisor::instance_id(self.service());
            live.insert(
                id.clone(),
                Live {
                    phase: InstancePhase::Preparing,
                    started_at: crate::clock::unix_now(),
                    stop: None,
                    prepared: None,
                    oom: None,
                },
            );
            id
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _alive = me.ctl.alive();
            match me.prepare_one(&id).await {
                Ok(p) => {
                    if let Some(l) = me.live().get_mut(&id) {
                        let _ = l.phase.to(InstancePhase::Prepared, &id);
                        l.prepared = Some(p);
                    }
                    if !me.wants_prepared() {
                        me.discard_prepared().await;
                    }
                }
                Err(reason) => {
                    me.end(&id);
                    tracing::warn!(revision = %me.name(), "preparing instance {id}: {reason}");
                }
            }
        });
    }

    /// Lets go of the prepared sandbox, if any. Counts as work in flight, so shutdown
    /// waits for its row to go.
    pub async fn discard_prepared(&self) {
        let _alive = self.ctl.alive();
        // Out of the map at once, so the reconciler cannot claim it meanwhile.
        let taken = {
            let mut live = self.live();
            let id = live
                .iter()
                .find(|(_, l)| l.phase == InstancePhase::Prepared)
                .map(|(id, _)| id.clone());
            id.and_then(|id| {
                let mut l = live.remove(&id)?;
                let _ = l.phase.to(InstancePhase::Exited, &id);
                Some((id, l.prepared.take()))
            })
        };
        let Some((id, p)) = taken else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || drop(p)).await;
        if let Err(e) = self.ctl.db().discard_instance(&id) {
            tracing::warn!(instance = %id, "forgetting a prepared sandbox: {e}");
        }
    }
}
