//! A service's traffic: resolving its targets (the latest ready revision, or pinned ones,
//! with tags) to revisions; routing them (a percent split at `NAME`, one route per tag at
//! `TAG-NAME`); keeping a runner for every revision that gets traffic or a tag and
//! retiring the others; changing the split (`skiff traffic`, rollback) without sending
//! requests at a cold revision while the service is busy. Starting and stopping
//! instances stays with the runners.

use crate::runner::{Outcome, RevisionRunner, STARTUP_TIMEOUT};
use crate::{Control, ControlError};
use skiff_core::{default_traffic, tag_host, validate_traffic, TrafficTarget};
use skiff_router::{Callers, Load, Private, Route};
use skiff_store::ServiceRecord;
use std::sync::Arc;

/// One traffic target with its revision resolved.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub revision: String,
    /// It follows the latest ready revision.
    pub latest: bool,
    pub percent: u32,
    pub tag: Option<String>,
}

/// The service's traffic as stored, or the default (all to the latest ready revision).
pub fn stored(service: &ServiceRecord) -> Vec<TrafficTarget> {
    service.traffic.clone().unwrap_or_else(default_traffic)
}

/// Resolves targets that follow the latest revision to the service's serving revision.
pub fn resolve(
    service: &ServiceRecord,
    traffic: &[TrafficTarget],
) -> Result<Vec<Resolved>, ControlError> {
    traffic
        .iter()
        .map(|t| {
            let revision = match (&t.revision, &service.serving_revision) {
                (Some(r), _) | (None, Some(r)) => r.clone(),
                (None, None) => {
                    return Err(ControlError::Conflict(format!(
                        "service {} has no ready revision yet for the traffic that follows \
                         the latest one",
                        service.name
                    )))
                }
            };
            Ok(Resolved {
                revision,
                latest: t.revision.is_none(),
                percent: t.percent,
                tag: t.tag.clone(),
            })
        })
        .collect()
}

/// The service's stored traffic, resolved.
pub fn resolve_stored(service: &ServiceRecord) -> Result<Vec<Resolved>, ControlError> {
    resolve(service, &stored(service))
}

fn no_such_revision(service: &str, revision: &str) -> ControlError {
    ControlError::invalid_spec(
        "traffic",
        format!("traffic: service {service} has no revision {revision}"),
    )
}

/// Pins the traffic that follows the latest revision to `serving`, the one serving
/// before a deploy with `--no-traffic` (as gcloud does). A tag on the latest revision
/// with no traffic keeps following it.
pub fn pin_latest(targets: &mut [TrafficTarget], serving: &str) {
    for t in targets
        .iter_mut()
        .filter(|t| t.revision.is_none() && t.percent > 0)
    {
        t.revision = Some(serving.to_owned());
    }
}

/// Points `tag` at `revision`: the tag leaves whichever target had it (a target left
/// with neither traffic nor a tag goes) and a target for `revision` with no traffic
/// carries it.
pub fn move_tag(targets: &mut Vec<TrafficTarget>, tag: &str, revision: &str) {
    for t in targets.iter_mut() {
        if t.tag.as_deref() == Some(tag) {
            t.tag = None;
        }
    }
    targets.retain(|t| t.percent > 0 || t.tag.is_some());
    targets.push(TrafficTarget {
        revision: Some(revision.to_owned()),
        percent: 0,
        tag: Some(tag.to_owned()),
    });
}

impl Control {
    /// The load of the service's main route, over every revision it splits to.
    pub(crate) fn load(&self, service: &str) -> Load {
        self.router
            .route(service)
            .as_deref()
            .map_or_else(Load::default, route_load)
    }

    /// Whether the service has an instance ready to serve now.
    pub(crate) fn is_busy(&self, service: &str) -> bool {
        self.load(service).ready > 0
    }

    /// The runner of `revision`, started from its stored record when none runs (or the
    /// one that runs was retired and is draining).
    fn runner_for(
        self: &Arc<Self>,
        service: &str,
        revision: &str,
    ) -> Result<Arc<RevisionRunner>, ControlError> {
        if let Some(r) = self.runner(revision).filter(|r| !r.is_retired()) {
            return Ok(r);
        }
        let rev = self
            .db()
            .revision(revision)?
            .filter(|r| r.service == service)
            .ok_or_else(|| no_such_revision(service, revision))?;
        let resolved = self.resolve_stored(&rev)?;
        self.start_runner(resolved)
    }

    /// Refuses a host label that another service answers at (as its name or a tag).
    pub(crate) fn check_label_free(&self, service: &str, label: &str) -> Result<(), ControlError> {
        let owner = self.router.label_owner(label).or_else(|| {
            (label != service && self.db().service(label).ok().flatten().is_some())
                .then(|| label.to_owned())
        });
        match owner {
            Some(other) if other != service => Err(ControlError::Conflict(format!(
                "host {label}.{} is already service {other}'s",
                self.config.domain
            ))),
            _ => Ok(()),
        }
    }

    /// Who may call `service`, as its serving revision (the latest that started) says:
    /// a deploy that fails changes nothing, its access included. Every host label of
    /// the service (its tags too) shares it.
    fn private_access(&self, service: &str) -> Result<Option<Arc<Private>>, ControlError> {
        let record = self.service_record(service)?;
        let Some(serving) = record.serving_revision else {
            return Ok(None);
        };
        let Some(rev) = self.db().revision(&serving)? else {
            return Ok(None);
        };
        let spec = &rev.spec;
        // Its async invocations follow the same revision's delivery settings.
        self.set_delivery_policy(service, &spec.delivery);
        if spec.allow_unauthenticated {
            return Ok(None);
        }
        let callers = match spec.allowed_callers.as_slice() {
            [all] if all == "*" => Callers::Any,
            names => Callers::Only(names.to_vec()),
        };
        Ok(Some(Arc::new(Private {
            service: service.to_owned(),
            callers,
        })))
    }

    /// Routes `service` as `resolved` says: `NAME` split by percent, `TAG-NAME` for each
    /// tag. Runners of its revisions that get neither traffic nor a tag are retired: they
    /// finish what they have and stop. The traffic was checked before it was stored.
    pub(crate) fn route(
        self: &Arc<Self>,
        service: &str,
        resolved: &[Resolved],
    ) -> Result<(), ControlError> {
        let mut runners: Vec<Arc<RevisionRunner>> = Vec::new();
        for t in resolved {
            if !runners.iter().any(|r| r.name() == t.revision) {
                runners.push(self.runner_for(service, &t.revision)?);
            }
        }
        let pool_of = |revision: &str| {
            runners
                .iter()
                .find(|r| r.name() == revision)
                .map(|r| Arc::clone(&r.pool))
                .expect("a runner for every revision resolved")
        };
        let split = resolved
            .iter()
            .map(|t| (pool_of(&t.revision), t.percent))
            .collect();
        let private = self.private_access(service)?;
        let split = Route::split(split)
            .ok_or_else(|| ControlError::internal("traffic percents do not add up to 100"))?
            .with_access(private.clone())
            .named(service);
        let mut routes = vec![(service.to_owned(), split)];
        for t in resolved {
            if let Some(tag) = &t.tag {
                let route = Route::single(pool_of(&t.revision))
                    .with_access(private.clone())
                    .named(service);
                routes.push((tag_host(service, tag), route));
            }
        }
        self.router.set_routes(service, routes);
        for r in self.runners_of(service) {
            if !runners.iter().any(|kept| Arc::ptr_eq(kept, &r)) {
                r.retire();
            }
        }
        Ok(())
    }

    /// Before a split sends requests to revisions that have no instance up, while the
    /// service has: starts one instance of each, so no request meets a cold start.
    /// Returns the runners warmed, to release once routed; a revision that fails to
    /// start fails the whole change.
    async fn warm_for(
        self: &Arc<Self>,
        service: &str,
        resolved: &[Resolved],
    ) -> Result<Vec<Arc<RevisionRunner>>, ControlError> {
        let mut warmed: Vec<Arc<RevisionRunner>> = Vec::new();
        if !self.is_busy(service) {
            return Ok(warmed);
        }
        for t in resolved.iter().filter(|t| t.percent > 0) {
            if warmed.iter().any(|r| r.name() == t.revision) {
                continue;
            }
            let runner = self.runner_for(service, &t.revision)?;
            if runner.pool.load().ready > 0 {
                continue;
            }
            if let Outcome::Failed(reason) = runner.warm(1, STARTUP_TIMEOUT).await {
                let routed = self
                    .router
                    .route(service)
                    .is_some_and(|route| route.pools().any(|p| Arc::ptr_eq(p, &runner.pool)));
                if !routed {
                    runner.retire();
                }
                for r in warmed {
                    r.release_warm();
                }
                return Err(ControlError::StartFailed {
                    reason: format!(
                        "revision {} failed to start: {reason}; traffic stays as it was",
                        t.revision
                    ),
                    log_tail: None,
                });
            }
            warmed.push(runner);
        }
        Ok(warmed)
    }

    /// Checks a traffic block against the service: its rules, pinned revisions exist, tag
    /// hosts are free.
    pub(crate) fn check_traffic(
        &self,
        service: &str,
        traffic: &[TrafficTarget],
    ) -> Result<(), ControlError> {
        validate_traffic(service, traffic)?;
        for rev in traffic.iter().filter_map(|t| t.revision.as_deref()) {
            let exists = self
                .db()
                .revision(rev)?
                .is_some_and(|r| r.service == service);
            if !exists {
                return Err(no_such_revision(service, rev));
            }
        }
        for tag in traffic.iter().filter_map(|t| t.tag.as_deref()) {
            self.check_label_free(service, &tag_host(service, tag))?;
        }
        Ok(())
    }

    /// Records the service's traffic (nothing when it is the default).
    pub(crate) fn store_traffic(
        &self,
        service: &str,
        traffic: &[TrafficTarget],
    ) -> Result<(), ControlError> {
        let kept = (traffic != default_traffic().as_slice()).then_some(traffic);
        Ok(self.db().set_traffic(service, kept)?)
    }

    /// Sets the service's traffic (checked, warmed, stored, routed) and prunes revisions.
    /// The caller holds the write lock.
    pub(crate) async fn apply_traffic(
        self: &Arc<Self>,
        service: &str,
        traffic: Vec<TrafficTarget>,
    ) -> Result<(), ControlError> {
        let record = self.service_record(service)?;
        self.check_traffic(service, &traffic)?;
        let resolved = resolve(&record, &traffic)?;
        let warmed = self.warm_for(service, &resolved).await?;
        self.store_traffic(service, &traffic)?;
        let routed = self.route(service, &resolved);
        for r in warmed {
            r.release_warm();
        }
        routed?;
        self.prune(service, &resolved, record.serving_revision.as_deref());
        Ok(())
    }

    /// Sends all of a service's traffic back to `to`, or to the newest revision before
    /// the one that now gets the most traffic that never failed to start; tags stay.
    /// The caller holds the write lock.
    pub(crate) async fn rollback(
        self: &Arc<Self>,
        service: &str,
        to: Option<String>,
    ) -> Result<(), ControlError> {
        let (targets, target) = self.rollback_target(service, to)?;
        self.apply_traffic(service, targets).await?;
        tracing::info!(service = %service, revision = %target, "rolled back");
        Ok(())
    }

    fn rollback_target(
        &self,
        service: &str,
        to: Option<String>,
    ) -> Result<(Vec<TrafficTarget>, String), ControlError> {
        let record = self.service_record(service)?;
        let traffic = stored(&record);
        let resolved = resolve(&record, &traffic)?;
        let current = resolved
            .iter()
            .max_by_key(|t| t.percent)
            .map(|t| t.revision.clone())
            .unwrap_or_default();
        let target = match to {
            Some(rev) => rev,
            None => {
                let revisions = self.db().revisions(service)?;
                let current_gen = revisions
                    .iter()
                    .find(|r| r.name == current)
                    .map_or(u32::MAX, |r| r.generation);
                revisions
                    .into_iter()
                    .find(|r| r.generation < current_gen && r.last_failure.is_none())
                    .map(|r| r.name)
                    .ok_or_else(|| {
                        ControlError::Conflict(format!(
                            "service {service} has no revision before {current} to roll back to"
                        ))
                    })?
            }
        };
        // Tags stay where they point; all traffic goes to the target.
        let mut rolled = vec![TrafficTarget::pinned(target.clone(), 100)];
        rolled.extend(
            traffic
                .into_iter()
                .filter(|t| t.tag.is_some())
                .map(|t| TrafficTarget { percent: 0, ..t }),
        );
        Ok((rolled, target))
    }
}

/// The load of a route, over every revision it splits to.
pub(crate) fn route_load(route: &Route) -> Load {
    route.pools().fold(Load::default(), |sum, pool| {
        let l = pool.load();
        Load {
            ready: sum.ready + l.ready,
            in_flight: sum.in_flight + l.in_flight,
            queued: sum.queued + l.queued,
            requests_total: sum.requests_total + l.requests_total,
            // Not summed: each pool integrates on its own clock.
            busy: skiff_router::BusyTime::default(),
        }
    })
}
