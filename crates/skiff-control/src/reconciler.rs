//! The per-revision autoscaling loop: each tick (or when demand changes) it samples the
//! router's activator queue and in-flight requests, asks the scaler how many instances
//! the revision should have, starts instances up to that count and stops idle ones above
//! it (never one with a request in flight). It decides; the supervisor carries out.
//! A quiet revision whose decision stands until a known time stops sampling until then,
//! or until its next request ([`RevisionRunner::pause_until`]).

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
/// per second, and each sample brings the pool's mean over time since the one before, so
/// a quiet revision sampled once a second reads the same; a request that has to wait
/// wakes the loop at once (Knative's autoscaler ticks every 2 s).
pub const QUIET_TICK: Duration = Duration::from_secs(1);

/// Quiet loops wake on a grid shared by all: this many instants per [`QUIET_TICK`], each
/// revision on one of them (by its name). Waking each at its own instant woke the
/// runtime's threads a thousand times a second at a few thousand quiet revisions, and
/// parking and waking threads was a quarter of the idle daemon's CPU (perf, N = 2,000);
/// one instant for all would make the runtime's queue hold every quiet loop at once.
const QUIET_PHASES: u32 = 20;

/// The grid's origin: the first quiet wake computed in this process.
static QUIET_EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();

/// A quiet loop's next wake after `now`: its phase's next instant on the grid that
/// starts at `epoch` (or a tick from now, on a clock that does not reach `epoch`).
fn next_quiet_wake(
    now: tokio::time::Instant,
    epoch: tokio::time::Instant,
    phase: u32,
) -> tokio::time::Instant {
    let Some(elapsed) = now.checked_duration_since(epoch) else {
        return now + QUIET_TICK;
    };
    let tick = QUIET_TICK.as_nanos();
    let offset = tick * u128::from(phase % QUIET_PHASES) / u128::from(QUIET_PHASES);
    let since = elapsed.as_nanos();
    let ticks = (since.saturating_sub(offset) / tick) + u128::from(since >= offset);
    let at = ticks * tick + offset;
    epoch + Duration::from_nanos(u64::try_from(at).unwrap_or(u64::MAX))
}

/// Which of the grid's instants a revision's quiet loop wakes at.
fn quiet_phase(revision: &str) -> u32 {
    let hash = revision.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % QUIET_PHASES
}

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
            let (want, observed) = self.reconcile(is_retired);
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
            let now = tokio::time::Instant::now();
            let wake = if self.is_quiet(load) {
                let epoch = *QUIET_EPOCH.get_or_init(|| now);
                let paused = (!is_retired)
                    .then(|| self.pause_until(want, observed))
                    .flatten()
                    .map_or(now, |until| tokio::time::Instant::from_std(until).max(now));
                let on_grid = next_quiet_wake(paused, epoch, quiet_phase(self.name()));
                // A preparation held back by its back-off is tried again on time.
                self.prepare_retry_at()
                    .map(tokio::time::Instant::from_std)
                    .map_or(on_grid, |retry| retry.min(on_grid))
            } else {
                now + TICK
            };
            tokio::select! {
                () = self.pool.demand_changed() => {}
                () = tokio::time::sleep_until(wake) => {}
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

    /// While quiet, until when the loop may stop sampling: the scaler's decision stands
    /// until then (see [`skiff_scaler::Scaler::quiet_until`]), every instance wanted is
    /// ready, and no sandbox prepared beside ready instances waits to be let go. The
    /// next request, or an instance leaving (or leaving or rejoining the rotation),
    /// wakes the loop before then. `None`: keep the quiet tick.
    ///
    /// Ten thousand idle revisions each deciding once a second cost the daemon a tenth
    /// of a core; paused, they decide once a stable window.
    fn pause_until(&self, want: u32, observed: skiff_router::Load) -> Option<Instant> {
        if want != observed.ready || self.holds_prepared_beside(observed.ready) {
            return None;
        }
        let decision = self.last_decision()?.decision;
        let now = crate::clock::now();
        let scaler = self.scaler.lock().unwrap_or_else(|p| p.into_inner());
        let until = scaler.quiet_until(now, &decision)?;
        self.pool.wake_on_next_change();
        // A request that came after the scaler's sample (and before the wake was
        // asked for) would go unseen until then.
        if self.pool.load().requests_total != observed.requests_total {
            return None;
        }
        Some(until)
    }

    /// Whether a sandbox is prepared (or being prepared) while instances are ready: it
    /// is let go [`crate::warm::PREPARED_GRACE`] after the revision was last busy, on a
    /// tick.
    fn holds_prepared_beside(&self, ready: u32) -> bool {
        ready > 0
            && self
                .live()
                .values()
                .any(|l| matches!(l.phase, InstancePhase::Prepared | InstancePhase::Preparing))
    }

    /// One step: sample demand, let the scaler decide, start instances up to its count
    /// and stop idle ones above it. Returns the count it wanted and the demand it saw.
    fn reconcile(self: &Arc<Self>, retired: bool) -> (u32, skiff_router::Load) {
        let now = crate::clock::now();
        let load = self.pool.sample();
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
            return (want, load);
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
        (want, load)
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
                    busy: Some(load.busy),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn quiet_loops_wake_on_their_phase_of_a_shared_grid() {
        let epoch = Instant::now();
        let ms = Duration::from_millis;
        let step = QUIET_TICK / QUIET_PHASES;
        // Phase 0 wakes on whole ticks from the epoch; phase 3 three steps after them.
        assert_eq!(next_quiet_wake(epoch, epoch, 0), epoch + QUIET_TICK);
        assert_eq!(next_quiet_wake(epoch + ms(1), epoch, 0), epoch + QUIET_TICK);
        assert_eq!(next_quiet_wake(epoch, epoch, 3), epoch + step * 3);
        assert_eq!(
            next_quiet_wake(epoch + step * 3, epoch, 3),
            epoch + QUIET_TICK + step * 3,
            "strictly after now"
        );
        assert_eq!(
            next_quiet_wake(epoch + QUIET_TICK * 7 + ms(1), epoch, 3),
            epoch + QUIET_TICK * 7 + step * 3
        );
        // Loops that went quiet at different instants wake together.
        let a = next_quiet_wake(epoch + ms(1260), epoch, 5);
        let b = next_quiet_wake(epoch + ms(2200), epoch, 5);
        assert_eq!(a, b);
        assert_eq!(a, epoch + ms(2250));
        // A clock behind the grid's origin still gets a wake a tick away.
        let earlier = epoch;
        let later = epoch + ms(500);
        assert_eq!(next_quiet_wake(earlier, later, 2), earlier + QUIET_TICK);
    }

    #[test]
    fn revisions_spread_over_every_phase() {
        let mut seen = [0u32; QUIET_PHASES as usize];
        for i in 0..2000 {
            seen[quiet_phase(&format!("hello-{i}-00001")) as usize] += 1;
        }
        // 100 each on average: none empty, none with more than twice its share.
        assert!(seen.iter().all(|&n| n > 0 && n < 200), "{seen:?}");
    }
}
