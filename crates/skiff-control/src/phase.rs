//! One instance's life as one state machine. Every change goes through [`InstancePhase::to`],
//! which refuses a change the life cycle does not have, so that counts derived from the
//! phases (instances starting, a sandbox prepared) cannot drift from them.
//!
//! The changes there are:
//! - Preparing → Prepared → Starting (a warm sandbox, prepared ahead; a cold start
//!   without one begins at Starting);
//! - Starting → Ready; Ready ⇄ Unready (the readiness probe); Ready ⇄ Frozen (the
//!   throttle took its CPU while it has no request); Frozen → Unready;
//! - Starting, Ready, Unready or Frozen → Stopping;
//! - any phase but Exited → Exited.

use std::fmt;

/// Where an instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstancePhase {
    /// Its sandbox is being set up ahead of need.
    Preparing,
    /// Its sandbox is set up; its app is not started.
    Prepared,
    /// Its app is starting; it gets no request until ready.
    Starting,
    /// It serves requests.
    Ready,
    /// Its readiness probe fails: out of the rotation until it passes.
    Unready,
    /// Ready, with its CPU taken away while it has no request.
    Frozen,
    /// It is being stopped (SIGTERM, grace, SIGKILL).
    Stopping,
    /// It is gone.
    Exited,
}

/// A change the life cycle does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("instance {instance}: no transition from {from} to {to}")]
pub struct PhaseError {
    pub instance: String,
    pub from: InstancePhase,
    pub to: InstancePhase,
}

impl InstancePhase {
    /// Every phase, in life order.
    pub const ALL: [InstancePhase; 8] = [
        InstancePhase::Preparing,
        InstancePhase::Prepared,
        InstancePhase::Starting,
        InstancePhase::Ready,
        InstancePhase::Unready,
        InstancePhase::Frozen,
        InstancePhase::Stopping,
        InstancePhase::Exited,
    ];

    /// The phase's name as `describe` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            InstancePhase::Preparing => "preparing",
            InstancePhase::Prepared => "prepared",
            InstancePhase::Starting => "starting",
            InstancePhase::Ready => "ready",
            InstancePhase::Unready => "unready",
            InstancePhase::Frozen => "frozen",
            InstancePhase::Stopping => "stopping",
            InstancePhase::Exited => "exited",
        }
    }

    /// Whether the life cycle goes from `self` to `next` in one step.
    pub fn can_become(self, next: InstancePhase) -> bool {
        use InstancePhase::*;
        matches!(
            (self, next),
            (Preparing, Prepared)
                | (Prepared, Starting)
                | (Starting, Ready)
                | (Ready, Unready)
                | (Unready, Ready)
                | (Ready, Frozen)
                | (Frozen, Ready)
                | (Frozen, Unready)
                | (Starting | Ready | Unready | Frozen, Stopping)
                | (
                    Preparing | Prepared | Starting | Ready | Unready | Frozen | Stopping,
                    Exited
                )
        )
    }

    /// Moves `self` to `next`, or says why not (naming `instance`) and stays.
    pub fn to(&mut self, next: InstancePhase, instance: &str) -> Result<(), PhaseError> {
        if !self.can_become(next) {
            return Err(PhaseError {
                instance: instance.to_owned(),
                from: *self,
                to: next,
            });
        }
        *self = next;
        Ok(())
    }

    /// Whether it is an instance someone can see working: started and not yet gone.
    pub fn is_started(self) -> bool {
        matches!(
            self,
            InstancePhase::Starting
                | InstancePhase::Ready
                | InstancePhase::Unready
                | InstancePhase::Frozen
                | InstancePhase::Stopping
        )
    }
}

impl fmt::Display for InstancePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::InstancePhase::*;
    use super::*;

    #[test]
    fn the_life_cycle_goes_forward() {
        let mut p = Preparing;
        for next in [
            Prepared, Starting, Ready, Frozen, Ready, Unready, Ready, Stopping, Exited,
        ] {
            p.to(next, "i1").unwrap();
            assert_eq!(p, next);
        }
    }

    #[test]
    fn invalid_transitions_are_refused_and_change_nothing() {
        let cases = [
            (Exited, Ready),
            (Exited, Starting),
            (Prepared, Ready),
            (Preparing, Starting),
            (Starting, Frozen),
            (Unready, Frozen),
            (Stopping, Ready),
            (Ready, Starting),
            (Ready, Prepared),
            (Prepared, Stopping),
        ];
        for (from, to) in cases {
            let mut p = from;
            let err = p.to(to, "i7").unwrap_err();
            assert_eq!(p, from, "a refused change leaves the phase");
            assert_eq!(
                err.to_string(),
                format!("instance i7: no transition from {from} to {to}")
            );
        }
    }

    #[test]
    fn every_live_phase_can_end_and_nothing_leaves_exited() {
        for p in InstancePhase::ALL {
            assert_eq!(p.can_become(Exited), p != Exited, "{p} -> exited");
            assert!(!Exited.can_become(p), "exited -> {p}");
            assert!(!p.can_become(p), "{p} -> {p} is no change");
        }
    }

    #[test]
    fn started_phases_are_those_describe_shows() {
        let shown: Vec<_> = InstancePhase::ALL
            .into_iter()
            .filter(|p| p.is_started())
            .map(InstancePhase::as_str)
            .collect();
        assert_eq!(
            shown,
            ["starting", "ready", "unready", "frozen", "stopping"]
        );
    }
}
