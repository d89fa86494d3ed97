//! The sandbox prepared ahead: a running revision keeps one instance Prepared (set up
//! short of starting its app), so that the next cold start only has to launch it. The
//! reconciler takes it when it starts an instance; this module makes the next one, and
//! lets it go when the revision retires or the daemon stops, or when it has ready
//! instances and was not busy for [`PREPARED_GRACE`]: its next request is served
//! warm, and a sandbox kept for nothing costs a second memory cgroup, network namespace
//! and set of file systems per service (docs/density.md).

use crate::phase::InstancePhase;
use crate::runner::{Live, RevisionRunner};
use crate::runtime::{InstancePlan, PreparedInstance};
use skiff_store::NewInstance;
use std::sync::Arc;
use std::time::Duration;

/// Waits between failed preparations (a host out of descriptors or memory would
/// otherwise be asked again on every tick of the loop).
pub(crate) const PREPARE_BACKOFF: skiff_core::Backoff =
    skiff_core::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// How long after it was last busy a revision with ready instances keeps a sandbox
/// prepared (Knative's stable window: the scaler's horizon for more instances).
pub(crate) const PREPARED_GRACE: Duration = Duration::from_secs(60);

/// When a revision was last busy: requests queued, or its ready instances at least half
/// full. A revision busy then may want another instance soon.
pub(crate) struct Activity {
    busy_at: Option<std::time::Instant>,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity { busy_at: None }
    }

    /// Notes whether the revision is busy at `now`; how long since it last was (`None`:
    /// never).
    pub(crate) fn since_busy(&mut self, busy: bool, now: std::time::Instant) -> Option<Duration> {
        if busy {
            self.busy_at = Some(now);
        }
        self.busy_at.map(|at| now.saturating_duration_since(at))
    }
}

/// Whether demand `load` fills at least half of what its ready instances serve at once
/// (`per_instance` each), or waits.
pub(crate) fn is_busy(load: skiff_router::Load, per_instance: f64) -> bool {
    load.queued > 0
        || load.in_flight > 0
            && f64::from(load.in_flight) * 2.0 >= f64::from(load.ready) * per_instance
}

/// Whether a revision with `instances` ready or starting, last busy `since_busy` ago,
/// keeps a sandbox prepared: while it has none (its next request is a cold start), and
/// for [`PREPARED_GRACE`] after it was busy (traffic may want more instances). An idle
/// revision with ready instances serves its next request warm; one whose first instance
/// is starting without it (a deploy) has no use for it either.
pub(crate) fn keeps_prepared(instances: u32, since_busy: Option<Duration>) -> bool {
    instances == 0 || since_busy.is_some_and(|d| d < PREPARED_GRACE)
}

impl RevisionRunner {
    /// Whether this revision, under `load`, keeps a sandbox prepared now (see
    /// [`keeps_prepared`]).
    pub(crate) fn needs_prepared(&self, load: skiff_router::Load) -> bool {
        let per_instance = match self.revision.spec.concurrency {
            0 => {
                let scaler = self.scaler.lock().unwrap_or_else(|p| p.into_inner());
                let s = scaler.settings();
                s.target * s.target_utilization
            }
            c => f64::from(c),
        };
        let since = self
            .activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .since_busy(is_busy(load, per_instance), crate::clock::now());
        keeps_prepared(load.ready + self.count(InstancePhase::Starting), since)
    }

    /// Registers instance `id` and prepares its sandbox (`ahead` of demand, or for a
    /// start now); on failure, why.
    pub(crate) async fn prepare_one(
        &self,
        id: &str,
        ahead: bool,
    ) -> Result<Box<dyn PreparedInstance>, String> {
        if let Err(e) = self.ctl.runtime.room_for_one(ahead) {
            return Err(format!("instance {id}: {e}"));
        }
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
        // Known from now on: the app may call other services as soon as it runs.
        if let Some(addr) = self.ctl.runtime.instance_address(slot) {
            self.ctl.gate.instance_at(addr, id, self.service());
        }
        // Resolved now: `latest` is the newest enabled version when the instance is made.
        // Its files belong to the app's user as the host sees it (its user namespace's
        // range depends on the slot).
        let process = &self.revision.process;
        let base = self.ctl.runtime.host_id_base(slot, &self.revision);
        let secrets = match self.ctl.resolve_secrets(
            self.service(),
            &self.revision.spec.secrets,
            Some((id, base + process.uid, base + process.gid)),
        ) {
            Ok(secrets) => secrets,
            Err(e) => {
                self.finish_record(id, None);
                return Err(format!("instance {id}: {e}"));
            }
        };
        let plan = InstancePlan {
            id: id.to_owned(),
            log_path,
            revision: Arc::clone(&self.revision),
            slot,
            ahead,
            secrets,
        };
        match self.ctl.runtime.prepare(plan).await {
            Ok(p) => Ok(p),
            Err(e) => {
                self.ctl.forget_secret_files(id);
                self.finish_record(id, None);
                Err(e.to_string())
            }
        }
    }

    fn wants_prepared(&self) -> bool {
        self.ctl.config.prepare_sandboxes && !self.is_retired() && !self.ctl.is_shutting_down()
    }

    fn prepare_backing_off(&self) -> bool {
        self.prepare_retry_at().is_some()
    }

    /// When the next preparation may start, while a failed one holds it back.
    pub(crate) fn prepare_retry_at(&self) -> Option<std::time::Instant> {
        let state = self
            .prepare_backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        state
            .1
            .filter(|not_before| crate::clock::now() < *not_before)
    }

    /// Counts the outcome of a preparation; on failure, when the next may start.
    fn prepare_done(&self, failure: Option<&str>, id: &str) {
        let mut state = self
            .prepare_backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(reason) = failure else {
            state.0.succeed();
            state.1 = None;
            return;
        };
        let step = state.0.fail();
        state.1 = Some(crate::clock::now() + step.wait);
        if step.log {
            tracing::warn!(
                revision = %self.name(),
                "preparing instance {id}: {reason}; next try in {:?} ({} failures in a row)",
                step.wait,
                step.failures
            );
        }
    }

    /// Prepares the next instance's sandbox in the background, unless one is prepared or
    /// being prepared already.
    pub(crate) fn refill_prepared(self: &Arc<Self>) {
        if !self.wants_prepared() || self.prepare_backing_off() {
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
            let generation = me.ctl.secrets_generation();
            match me.prepare_one(&id, true).await {
                Ok(p) => {
                    me.prepare_done(None, &id);
                    if let Some(l) = me.live().get_mut(&id) {
                        let _ = l.phase.to(InstancePhase::Prepared, &id);
                        l.prepared = Some(p);
                    }
                    // A secret written while it was made may have been resolved before
                    // the write, and the write's refresh found nothing prepared yet.
                    let stale = !me.revision.spec.secrets.is_empty()
                        && me.ctl.secrets_generation() != generation;
                    if !me.wants_prepared() || !me.needs_prepared(me.pool.load()) || stale {
                        me.discard_prepared().await;
                        if stale {
                            me.refill_prepared();
                        }
                    }
                }
                Err(reason) => {
                    me.end(&id);
                    me.prepare_done(Some(&reason), &id);
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
        self.ctl.forget_secret_files(&id);
        if let Err(e) = self.ctl.write_freeing_space(|db| db.discard_instance(&id)) {
            tracing::warn!(instance = %id, "forgetting a prepared sandbox: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_revision_keeps_a_prepared_sandbox_while_cold_or_lately_busy() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut activity = Activity::new();
        assert_eq!(activity.since_busy(false, at(5)), None);
        assert!(keeps_prepared(0, None), "none ready: cold");
        assert!(!keeps_prepared(1, None), "ready and never busy");
        let busy = activity.since_busy(true, at(100));
        assert!(keeps_prepared(1, busy));
        assert!(keeps_prepared(1, activity.since_busy(false, at(159))));
        assert!(
            !keeps_prepared(1, activity.since_busy(false, at(160))),
            "a minute"
        );
        assert!(keeps_prepared(3, activity.since_busy(true, at(200))));
    }

    #[test]
    fn busy_is_half_full_or_queued() {
        let load = |ready, in_flight, queued| skiff_router::Load {
            ready,
            in_flight,
            queued,
            ..skiff_router::Load::default()
        };
        assert!(!is_busy(load(1, 1, 0), 100.0), "one request of a hundred");
        assert!(is_busy(load(1, 50, 0), 100.0));
        assert!(!is_busy(load(2, 49, 0), 50.0));
        assert!(is_busy(load(1, 1, 0), 1.0), "concurrency 1, serving");
        assert!(is_busy(load(0, 0, 1), 100.0), "waiting for an instance");
        assert!(!is_busy(load(0, 0, 0), 100.0), "nothing asked");
    }
}
