//! One revision at work: its pool in the router, its instances by phase, its scaler, and
//! the deploy's hold on it. The loop that scales it lives in [`crate::reconciler`], each
//! instance's life in [`crate::supervisor`], the sandbox prepared ahead in [`crate::warm`].
//! Every count the loop needs (starting, prepared) is derived from the instances' phases.

use crate::phase::InstancePhase;
use crate::revision::Revision;
use crate::runtime::PreparedInstance;
use crate::Control;
use skiff_router::RevisionPool;
use skiff_scaler::{Decision, Scaler};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How long an instance may take to listen on its port (Cloud Run's startup limit).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(240);

/// A live instance as `describe` shows it.
#[derive(Clone, Debug)]
pub struct LiveInstance {
    pub id: String,
    pub phase: InstancePhase,
    /// Unix time it was started.
    pub started_at: i64,
    /// Processes of it the OOM killer ended so far, when the runtime can tell.
    pub oom_kills: Option<u64>,
}

/// One instance the runner knows, from its preparation to its end.
pub(crate) struct Live {
    pub phase: InstancePhase,
    pub started_at: i64,
    /// Asks its supervisor to stop it (taken when asked).
    pub stop: Option<oneshot::Sender<()>>,
    /// Its sandbox while Prepared, waiting to launch.
    pub prepared: Option<Box<dyn PreparedInstance>>,
    /// Reads its OOM kill count, once it runs.
    pub oom: Option<crate::runtime::OomCounter>,
}

/// A revision's instances and the loop that scales them.
pub struct RevisionRunner {
    pub revision: Arc<Revision>,
    pub pool: Arc<RevisionPool>,
    pub(crate) ctl: Arc<Control>,
    live: Mutex<HashMap<String, Live>>,
    pub(crate) failures_in_a_row: AtomicU32,
    /// Failed preparations of the sandbox ahead in a row, and when the next may start.
    pub(crate) prepare_backoff: Mutex<(skiff_core::Backoff, Option<std::time::Instant>)>,
    /// When the revision was last busy (whether it keeps a sandbox prepared).
    pub(crate) activity: Mutex<crate::warm::Activity>,
    /// Instances kept regardless of demand (a deploy warming the new revision).
    pub(crate) warm_floor: AtomicU32,
    pub(crate) scaler: Mutex<Scaler>,
    /// The scaler's latest decision and its Unix time, for `describe`.
    pub(crate) decision: Mutex<Option<ScaleDecision>>,
    pub(crate) retired: watch::Sender<bool>,
    /// Bumped whenever an instance becomes ready or fails.
    pub(crate) events: watch::Sender<u64>,
}

/// The autoscaler's latest decision for a revision, as `describe` shows it.
#[derive(Clone, Debug)]
pub struct ScaleDecision {
    /// Unix time of the decision.
    pub at: i64,
    pub decision: Decision,
}

/// What happened to a revision's first instances (for deploys that wait on them).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    Failed(String),
}

impl RevisionRunner {
    pub(crate) fn new(
        ctl: Arc<Control>,
        revision: Arc<Revision>,
        pool: Arc<RevisionPool>,
        scaling: skiff_scaler::Settings,
    ) -> Arc<RevisionRunner> {
        Arc::new(RevisionRunner {
            scaler: Mutex::new(Scaler::new(scaling, crate::clock::now())),
            decision: Mutex::new(None),
            revision,
            pool,
            ctl,
            live: Mutex::new(HashMap::new()),
            failures_in_a_row: AtomicU32::new(0),
            prepare_backoff: Mutex::new((crate::warm::PREPARE_BACKOFF, None)),
            activity: Mutex::new(crate::warm::Activity::new()),
            warm_floor: AtomicU32::new(0),
            retired: watch::channel(false).0,
            events: watch::channel(0).0,
        })
    }

    /// The revision's name.
    pub fn name(&self) -> &str {
        &self.revision.name
    }

    /// Its service's name.
    pub fn service(&self) -> &str {
        &self.revision.service
    }

    pub(crate) fn live(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many of its instances are in `phase`.
    pub fn count(&self, phase: InstancePhase) -> u32 {
        self.live().values().filter(|l| l.phase == phase).count() as u32
    }

    /// Moves instance `id` to `phase`; a refused change is a bug, logged, not acted on.
    /// Keeps how to read instance `id`'s OOM kill count, for `describe`.
    pub(crate) fn set_oom_counter(&self, id: &str, counter: Option<crate::runtime::OomCounter>) {
        if let Some(l) = self.live().get_mut(id) {
            l.oom = counter;
        }
    }

    pub(crate) fn set_phase(&self, id: &str, phase: InstancePhase) {
        if let Some(l) = self.live().get_mut(id) {
            if let Err(e) = l.phase.to(phase, id) {
                tracing::error!(revision = %self.name(), "{e}");
            }
        }
    }

    /// The throttle paused (`true`) or resumed an instance: a Ready one shows as Frozen
    /// while paused. An Unready one stays Unready either way.
    pub(crate) fn throttled(&self, id: &str, paused: bool) {
        if let Some(l) = self.live().get_mut(id) {
            let next = match (l.phase, paused) {
                (InstancePhase::Ready, true) => InstancePhase::Frozen,
                (InstancePhase::Frozen, false) => InstancePhase::Ready,
                _ => return,
            };
            let _ = l.phase.to(next, id);
        }
    }

    /// Forgets instance `id`: it has exited.
    pub(crate) fn end(&self, id: &str) {
        if let Some(mut l) = self.live().remove(id) {
            if let Err(e) = l.phase.to(InstancePhase::Exited, id) {
                tracing::error!(revision = %self.name(), "{e}");
            }
        }
    }

    /// Its instances that have started, oldest first.
    pub fn instances(&self) -> Vec<LiveInstance> {
        let mut v: Vec<_> = self
            .live()
            .iter()
            .filter(|(_, l)| l.phase.is_started())
            .map(|(id, l)| LiveInstance {
                id: id.clone(),
                phase: l.phase,
                started_at: l.started_at,
                oom_kills: l.oom.as_ref().map(|count| count()),
            })
            .collect();
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
        let ids: Vec<String> = self.live().keys().cloned().collect();
        for id in ids {
            self.stop_instance(&id);
        }
    }

    /// Asks instance `id`'s supervisor to stop it.
    pub(crate) fn stop_instance(&self, id: &str) {
        if let Some(live) = self.live().get_mut(id) {
            // Already stopping, or not started: the phase stays.
            let _ = live.phase.to(InstancePhase::Stopping, id);
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

    pub(crate) fn bump(&self) {
        self.events.send_modify(|n| *n += 1);
    }
}
