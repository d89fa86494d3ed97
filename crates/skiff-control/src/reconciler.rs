//! The per-revision autoscaling loop: each tick (or when demand changes) it samples the
//! router's activator queue and in-flight requests, asks the scaler how many instances
//! the revision should have, starts instances up to that count and stops idle ones above
//! it (never one with a request in flight). It decides; the supervisor carries out.

use crate::phase::InstancePhase;
use crate::runner::{Live, RevisionRunner, ScaleDecision};
use skiff_scaler::Observation;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How often the reconcile loop samples demand and decides, without being woken.
pub const TICK: Duration = Duration::from_millis(100);

/// How often it does so while the revision is quiet (nothing in flight or waiting, no
/// instance on its way up or down). Ten thousand idle revisions at [`TICK`] kept a core
/// busy (bench/density: 9.6 % of one at a thousand); the scaler's window keeps a mean
/// per second, so a quiet revision sampled once a second reads the same, and a request
/// that has to wait wakes the loop at once (Knative's autoscaler ticks every 2 s).
pub const QUIET_TICK: Duration = Duration::from_secs(1);

impl RevisionRunner {
    /// Starts the reconcile loop.
    pub(crate) fn spawn(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move { me.reconcile_loop().await });
    }

    async fn reconcile_loop(self: Arc<Self>) {
        let mut retired = self.retired.subscribe();
        loop {
            let is_retired = *retired.borrow_and_update();
            self.reconcile(is_retired);
            let sampled = self.pool.load();
            if is_retired || self.ctl.is_shutting_down() || !self.needs_prepared(sampled) {
                self.discard_prepared().await;
            } else {
                self.refill_prepared();
            }
            let load = self.pool.load();
            if is_retired && load.queued == 0 && load.in_flight == 0 && self.live().is_empty() {
                self.ctl.forget_runner(&self);
                return;
            }
            let pause = if self.is_quiet(load) {
                QUIET_TICK
            } else {
                TICK
            };
            tokio::select! {
                () = self.pool.demand_changed() => {}
                () = tokio::time::sleep(pause) => {}
                _ = retired.changed() => {}
            }
        }
    }

    /// Nothing in flight or waiting, and every instance settled (ready, frozen or
    /// prepared): nothing a tick could change soon.
    fn is_quiet(&self, load: skiff_router::Load) -> bool {
        load.in_flight == 0
            && load.queued == 0
            && self.live().values().all(|l| {
                matches!(
                    l.phase,
                    InstancePhase::Ready | InstancePhase::Frozen | InstancePhase::Prepared
                )
            })
    }

    /// One step: sample demand, let the scaler decide, start instances up to its count
    /// and stop idle ones above it.
    fn reconcile(self: &Arc<Self>, retired: bool) {
        let now = crate::clock::now();
        let load = self.pool.load();
        let spec = &self.revision.spec;
        let want = if retired {
            // No new traffic comes: serve what is still queued, then go.
            skiff_scaler::instances_for(load.in_flight + load.queued, spec.concurrency)
        } else {
            self.decide(now, load)
                .max(self.warm_floor.load(Ordering::SeqCst))
                .min(spec.max_instances)
        };
        let starting = self.count(InstancePhase::Starting);
        if !self.ctl.is_shutting_down() && !self.pool.in_backoff(now) {
            for _ in (load.ready + starting)..want {
                let (id, prepared, stop) = self.claim_start();
                let me = Arc::clone(self);
                tokio::spawn(async move { me.run_instance(id, prepared, stop).await });
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

    /// Registers the next instance as Starting, taking the prepared sandbox when there
    /// is one; returns its id, that sandbox, and the receiver of its stop request.
    fn claim_start(
        &self,
    ) -> (
        String,
        Option<Box<dyn crate::runtime::PreparedInstance>>,
        oneshot::Receiver<()>,
    ) {
        let (stop_tx, stop_rx) = oneshot::channel();
        let mut live = self.live();
        let warm = live
            .iter_mut()
            .find(|(_, l)| l.phase == InstancePhase::Prepared);
        if let Some((id, l)) = warm {
            let id = id.clone();
            let _ = l.phase.to(InstancePhase::Starting, &id);
            l.started_at = crate::clock::unix_now();
            l.stop = Some(stop_tx);
            return (id, l.prepared.take(), stop_rx);
        }
        let id = crate::supervisor::instance_id(self.service());
        live.insert(
            id.clone(),
            Live {
                phase: InstancePhase::Starting,
                started_at: crate::clock::unix_now(),
                stop: Some(stop_tx),
                prepared: None,
                oom: None,
            },
        );
        (id, None, stop_rx)
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
            tracing::debug!(revision = %self.name(), desired, "{}", decision.reason);
        }
        *last = Some(ScaleDecision {
            at: crate::clock::unix_now(),
            decision,
        });
        desired
    }
}
