//! A service's traffic: resolving its targets (the latest ready revision, or pinned ones,
//! with tags) to revisions; routing them (a percent split at `NAME`, one route per tag at
//! `TAG-NAME`); keeping a runner for every revision that gets traffic or a tag and
//! retiring the others; changing the split (`skiff traffic`, rollback) without sending
//! requests at a cold revision while the service is busy; deleting revisions past the
//! kept count. Starting and stopping instances stays with the runners.

use super::runner::{Outcome, RevisionRunner, STARTUP_TIMEOUT};
use super::services::{self, ApiError};
use super::Ctx;
use axum::http::StatusCode;
use skiff_core::{default_traffic, tag_host, validate_traffic, ServiceSpec, TrafficTarget};
use skiff_router::{Load, Route};
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
pub fn stored(service: &ServiceRecord) -> Result<Vec<TrafficTarget>, ApiError> {
    match &service.traffic_json {
        None => Ok(default_traffic()),
        Some(json) => serde_json::from_str(json).map_err(|e| {
            ApiError::internal(format!("service {}: stored traffic: {e}", service.name))
        }),
    }
}

/// Resolves targets that follow the latest revision to the service's serving revision.
pub fn resolve(
    service: &ServiceRecord,
    traffic: &[TrafficTarget],
) -> Result<Vec<Resolved>, ApiError> {
    traffic
        .iter()
        .map(|t| {
            let revision = match (&t.revision, &service.serving_revision) {
                (Some(r), _) | (None, Some(r)) => r.clone(),
                (None, None) => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "conflict",
                        format!(
                            "service {} has no ready revision yet for the traffic that follows \
                             the latest one",
                            service.name
                        ),
                    ))
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
pub fn resolve_stored(service: &ServiceRecord) -> Result<Vec<Resolved>, ApiError> {
    resolve(service, &stored(service)?)
}

/// The load of the service's main route, over every revision it splits to.
pub fn load(ctx: &Ctx, service: &str) -> Load {
    let Some(route) = ctx.router.route(service) else {
        return Load::default();
    };
    route.pools().fold(Load::default(), |sum, pool| {
        let l = pool.load();
        Load {
            ready: sum.ready + l.ready,
            in_flight: sum.in_flight + l.in_flight,
            queued: sum.queued + l.queued,
            requests_total: sum.requests_total + l.requests_total,
        }
    })
}

/// The runner of `revision`, started from its stored spec when none runs (or the one
/// that runs was retired and is draining).
fn runner_for(
    ctx: &Arc<Ctx>,
    service: &str,
    revision: &str,
) -> Result<Arc<RevisionRunner>, ApiError> {
    if let Some(r) = ctx.runner(revision).filter(|r| !r.is_retired()) {
        return Ok(r);
    }
    let rev = ctx
        .db()
        .revision(revision)
        .map_err(ApiError::internal)?
        .filter(|r| r.service == service)
        .ok_or_else(|| no_such_revision(service, revision))?;
    let spec: ServiceSpec = serde_json::from_str(&rev.spec_json)
        .map_err(|e| ApiError::internal(format!("revision {revision}: stored spec: {e}")))?;
    let image = ctx
        .db()
        .resolve_image(&rev.image_digest)
        .map_err(|e| ApiError::internal(format!("revision {revision}: {e}")))?;
    let template = services::template(ctx, &image, &spec, service, &rev.name)?;
    services::start_runner(ctx, &rev, spec, template)
}

fn no_such_revision(service: &str, revision: &str) -> ApiError {
    ApiError {
        field: Some("traffic".into()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_spec",
            format!("traffic: service {service} has no revision {revision}"),
        )
    }
}

/// Refuses a host label that another service answers at (as its name or a tag).
pub fn check_label_free(ctx: &Ctx, service: &str, label: &str) -> Result<(), ApiError> {
    let owner = ctx.router.label_owner(label).or_else(|| {
        (label != service && ctx.db().service(label).ok().flatten().is_some())
            .then(|| label.to_owned())
    });
    match owner {
        Some(other) if other != service => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("host {label}.{} is already service {other}'s", ctx.domain),
        )),
        _ => Ok(()),
    }
}

/// Routes `service` as `resolved` says: `NAME` split by percent, `TAG-NAME` for each
/// tag. Runners of its revisions that get neither traffic nor a tag are retired: they
/// finish what they have and stop. The traffic was [`check`]ed before it was stored.
pub fn route(ctx: &Arc<Ctx>, service: &str, resolved: &[Resolved]) -> Result<(), ApiError> {
    let mut runners: Vec<Arc<RevisionRunner>> = Vec::new();
    for t in resolved {
        if !runners.iter().any(|r| r.name == t.revision) {
            runners.push(runner_for(ctx, service, &t.revision)?);
        }
    }
    let pool_of = |revision: &str| {
        runners
            .iter()
            .find(|r| r.name == revision)
            .map(|r| Arc::clone(&r.pool))
            .expect("a runner for every revision resolved")
    };
    let split = resolved
        .iter()
        .map(|t| (pool_of(&t.revision), t.percent))
        .collect();
    let split = Route::split(split)
        .ok_or_else(|| ApiError::internal("traffic percents do not add up to 100"))?;
    let mut routes = vec![(service.to_owned(), split)];
    for t in resolved {
        if let Some(tag) = &t.tag {
            routes.push((tag_host(service, tag), Route::single(pool_of(&t.revision))));
        }
    }
    ctx.router.set_routes(service, routes);
    for r in ctx.runners_of(service) {
        if !runners.iter().any(|kept| Arc::ptr_eq(kept, &r)) {
            r.retire();
        }
    }
    Ok(())
}

/// Whether the service has an instance ready to serve now.
pub fn is_busy(ctx: &Ctx, service: &str) -> bool {
    load(ctx, service).ready > 0
}

/// Before a split sends requests to revisions that have no instance up, while the
/// service has: starts one instance of each, so no request meets a cold start. Returns
/// the runners warmed, to release once routed; a revision that fails to start fails the
/// whole change.
async fn warm_for(
    ctx: &Arc<Ctx>,
    service: &str,
    resolved: &[Resolved],
) -> Result<Vec<Arc<RevisionRunner>>, ApiError> {
    let mut warmed = Vec::new();
    if !is_busy(ctx, service) {
        return Ok(warmed);
    }
    for t in resolved.iter().filter(|t| t.percent > 0) {
        if warmed
            .iter()
            .any(|r: &Arc<RevisionRunner>| r.name == t.revision)
        {
            continue;
        }
        let runner = runner_for(ctx, service, &t.revision)?;
        if runner.pool.load().ready > 0 {
            continue;
        }
        if let Outcome::Failed(reason) = runner.warm(1, STARTUP_TIMEOUT).await {
            let routed = ctx
                .router
                .route(service)
                .is_some_and(|route| route.pools().any(|p| Arc::ptr_eq(p, &runner.pool)));
            if !routed {
                runner.retire();
            }
            for r in warmed {
                r.release_warm();
            }
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "start_failed",
                format!(
                    "revision {} failed to start: {reason}; traffic stays as it was",
                    t.revision
                ),
            ));
        }
        warmed.push(runner);
    }
    Ok(warmed)
}

/// Checks a traffic block against the service: its rules, pinned revisions exist, tag
/// hosts are free.
pub fn check(ctx: &Ctx, service: &str, traffic: &[TrafficTarget]) -> Result<(), ApiError> {
    validate_traffic(service, traffic)?;
    for rev in traffic.iter().filter_map(|t| t.revision.as_deref()) {
        let exists = ctx
            .db()
            .revision(rev)
            .map_err(ApiError::internal)?
            .is_some_and(|r| r.service == service);
        if !exists {
            return Err(no_such_revision(service, rev));
        }
    }
    for tag in traffic.iter().filter_map(|t| t.tag.as_deref()) {
        check_label_free(ctx, service, &tag_host(service, tag))?;
    }
    Ok(())
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

/// Records the service's traffic (nothing when it is the default).
pub fn store(ctx: &Ctx, service: &str, traffic: &[TrafficTarget]) -> Result<(), ApiError> {
    let json = if traffic == default_traffic().as_slice() {
        None
    } else {
        Some(serde_json::to_string(traffic).map_err(ApiError::internal)?)
    };
    ctx.db()
        .set_traffic(service, json.as_deref())
        .map_err(ApiError::internal)
}

/// Sets the service's traffic (checked, warmed, stored, routed) and prunes revisions.
/// The caller holds the deploy lock.
pub async fn apply(
    ctx: &Arc<Ctx>,
    service: &str,
    traffic: Vec<TrafficTarget>,
) -> Result<(), ApiError> {
    let record = services::service_record(ctx, service)?;
    check(ctx, service, &traffic)?;
    let resolved = resolve(&record, &traffic)?;
    let warmed = warm_for(ctx, service, &resolved).await?;
    store(ctx, service, &traffic)?;
    let routed = route(ctx, service, &resolved);
    for r in warmed {
        r.release_warm();
    }
    routed?;
    prune(ctx, service, &resolved, record.serving_revision.as_deref());
    Ok(())
}

/// The revision traffic goes back to: `to`, or the newest one before the revision that
/// now gets the most traffic that never failed to start.
pub fn rollback_target(
    ctx: &Ctx,
    service: &str,
    to: Option<String>,
) -> Result<(Vec<TrafficTarget>, String), ApiError> {
    let record = services::service_record(ctx, service)?;
    let traffic = stored(&record)?;
    let resolved = resolve(&record, &traffic)?;
    let current = resolved
        .iter()
        .max_by_key(|t| t.percent)
        .map(|t| t.revision.clone())
        .unwrap_or_default();
    let target = match to {
        Some(rev) => rev,
        None => {
            let revisions = ctx.db().revisions(service).map_err(ApiError::internal)?;
            let current_gen = revisions
                .iter()
                .find(|r| r.name == current)
                .map_or(u32::MAX, |r| r.generation);
            revisions
                .into_iter()
                .find(|r| r.generation < current_gen && r.last_failure.is_none())
                .map(|r| r.name)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "conflict",
                        format!(
                            "service {service} has no revision before {current} to roll back to"
                        ),
                    )
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

/// Deletes the service's revisions past the kept count that get no traffic, have no tag
/// and are not its latest ready one.
pub fn prune(ctx: &Ctx, service: &str, resolved: &[Resolved], serving: Option<&str>) {
    let mut protected: Vec<String> = resolved.iter().map(|t| t.revision.clone()).collect();
    protected.extend(serving.map(str::to_owned));
    match ctx
        .db()
        .prune_revisions(service, ctx.revisions_kept, &protected)
    {
        Ok(gone) if !gone.is_empty() => {
            tracing::info!(service, "deleted old revisions {}", gone.join(", "))
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(service, "deleting old revisions: {e}"),
    }
}
