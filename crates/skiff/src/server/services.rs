//! Deploying, removing, listing and describing services, and reloading them at start.
//! A deploy makes an immutable revision; traffic moves to it at once when nothing is
//! serving, or after one of its instances is ready when the old revision has instances
//! up (so a switch under load never meets a cold start, and a broken revision never takes
//! traffic from a working one).

use super::runner::{self, describe_exit, Outcome, RevisionRunner};
use super::{traffic, Ctx};
use crate::apitypes::{
    AutoscalerDetail, DeployRequest, Deployed, FailureDetail, InstanceDetail, RevisionDetail,
    ServiceDetail, ServiceSummary, TrafficDetail,
};
use axum::http::StatusCode;
use skiff_core::{
    revision_name, tag_host, validate_service_name, validate_tag, ServiceSpec, TrafficTarget,
};
use skiff_image::ProcessConfig;
use skiff_router::{PoolConfig, RevisionPool};
use skiff_sandbox::{Limits, SandboxSpec};
use skiff_store::{ImageRecord, InstanceState, RevisionRecord, ServiceRecord};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// An API failure: HTTP status, kind, message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub log_tail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            field: None,
            log_tail: None,
        }
    }

    /// A 400 for a request the API could not take as it was sent.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }

    pub fn not_found(service: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such service: {service}"),
        )
    }
}

/// A 400 about request field `field`.
fn bad_request(field: &str, message: String) -> ApiError {
    ApiError {
        field: Some(field.to_owned()),
        ..ApiError::invalid_request(message)
    }
}

impl From<skiff_core::SpecError> for ApiError {
    fn from(e: skiff_core::SpecError) -> Self {
        ApiError {
            field: Some(e.field.to_owned()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_spec", e.to_string())
        }
    }
}

impl From<skiff_scaler::SettingsError> for ApiError {
    fn from(e: skiff_scaler::SettingsError) -> Self {
        ApiError {
            field: Some(e.knob.to_owned()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_spec", e.to_string())
        }
    }
}

/// Instance cap on processes and threads.
const PIDS_LIMIT: u64 = 4096;
/// Cap on each instance's log file.
const LOG_MAX_BYTES: u64 = 64 << 20;

/// Everything needed to start an instance of the revision, but its id and log path.
pub(super) fn template(
    ctx: &Ctx,
    image: &ImageRecord,
    spec: &ServiceSpec,
    service: &str,
    revision: &str,
) -> Result<SandboxSpec, ApiError> {
    let bad = |e: anyhow::Error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_spec",
            format!("image {}: {e:#}", spec.image),
        )
    };
    let mut process = if spec.command.is_empty() {
        ProcessConfig::from_image(image)
    } else {
        ProcessConfig::with_command(image, spec.command.clone())
    }
    .map_err(|e| bad(e.into()))?;
    if !spec.entrypoint.is_empty() {
        process.args = spec.entrypoint.clone();
        process.args.extend(spec.command.iter().cloned());
    }
    let user = ctx
        .images
        .resolve_user(image, &process.user)
        .map_err(|e| bad(e.into()))?;
    let mut extra = vec![
        format!("K_SERVICE={service}"),
        format!("K_REVISION={revision}"),
        format!("K_CONFIGURATION={service}"),
    ];
    extra.extend(spec.env.iter().cloned());
    let env = crate::launch::merged_env(&process.env, &extra, spec.port, &user).map_err(bad)?;
    Ok(SandboxSpec {
        id: String::new(),
        layers: ctx.images.rootfs_layers(image),
        read_only: false,
        args: process.args,
        env,
        cwd: process.cwd,
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        limits: Limits {
            memory_bytes: Some(spec.memory_bytes),
            cpu_millis: Some(spec.cpu_millis),
            pids: Some(PIDS_LIMIT),
        },
        network: None,
        log_path: PathBuf::new(),
        log_max_bytes: LOG_MAX_BYTES,
        run_dir: PathBuf::from(crate::launch::RUN_DIR),
        scratch_bytes: spec.memory_bytes,
        tee_output: false,
    })
}

pub(super) fn start_runner(
    ctx: &Arc<Ctx>,
    rev: &RevisionRecord,
    spec: ServiceSpec,
    template: SandboxSpec,
) -> Result<Arc<RevisionRunner>, ApiError> {
    let scaling = ctx.scaling.settings_for(&spec)?;
    let digest = rev
        .image_digest
        .parse()
        .map_err(|e| ApiError::internal(format!("revision {}: {e}", rev.name)))?;
    let pool = RevisionPool::new(PoolConfig {
        revision: rev.name.clone(),
        concurrency: spec.concurrency,
        queue_limit: ctx.queue_depth,
        timeout: Duration::from_millis(spec.timeout_ms),
    });
    let runner = RevisionRunner::new(
        Arc::clone(ctx),
        runner::RevisionParts {
            service: rev.service.clone(),
            name: rev.name.clone(),
            spec,
            image_digest: digest,
            template,
            pool,
            scaling,
        },
    );
    ctx.add_runner(Arc::clone(&runner));
    runner.spawn();
    Ok(runner)
}

/// Deploys a new revision of `name`. Traffic that follows the latest revision moves to
/// it once it is known to start (at once when nothing is up, after one ready instance
/// when the service is busy); pinned traffic stays where it is. With `new_traffic`
/// (`skiff apply`), the service's traffic becomes that once the revision is up. With
/// `no_traffic` the new revision gets none; with `tag` it gets that tag.
pub async fn deploy(ctx: &Arc<Ctx>, name: &str, req: DeployRequest) -> Result<Deployed, ApiError> {
    let DeployRequest {
        spec,
        traffic: new_traffic,
        no_traffic,
        tag,
    } = req;
    validate_service_name(name)?;
    spec.validate()?;
    let _serial = ctx.deploy_lock.lock().await;
    traffic::check_label_free(ctx, name, name)?;
    if let Some(t) = &new_traffic {
        traffic::check(ctx, name, t)?;
    }
    if let Some(tag) = &tag {
        check_new_tag(ctx, name, tag)?;
    }
    let serving_before = if no_traffic {
        Some(serving_to_pin(ctx, name, new_traffic.is_some())?)
    } else {
        None
    };
    let image = ctx.db().resolve_image(&spec.image).map_err(|e| ApiError {
        field: Some("image".into()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_spec",
            format!("image: {e}"),
        )
    })?;
    // Everything that can be wrong with the spec is found before a revision is written.
    template(ctx, &image, &spec, name, &revision_name(name, 0))?;
    ctx.scaling.settings_for(&spec)?;
    let spec_json = serde_json::to_string(&spec).map_err(ApiError::internal)?;
    let rev = ctx
        .db()
        .create_revision(name, &image.digest.to_string(), &spec_json, revision_name)
        .map_err(ApiError::internal)?;
    let template = template(ctx, &image, &spec, name, &rev.name)?;
    let initial = ctx.scaling.initial_scale(&spec);
    let runner = start_runner(ctx, &rev, spec, template)?;
    let record = service_record(ctx, name)?;
    let mut targets = match new_traffic {
        Some(t) => t,
        None => traffic::stored(&record)?,
    };
    if let Some(serving) = &serving_before {
        traffic::pin_latest(&mut targets, serving);
    }
    if let Some(tag) = &tag {
        traffic::move_tag(&mut targets, tag, &rev.name);
    }
    let follows_latest = targets
        .iter()
        .any(|t| t.revision.is_none() && t.percent > 0);
    let busy = follows_latest && traffic::is_busy(ctx, name);
    let warm = initial.max(u32::from(busy));
    if warm > 0 {
        if let Outcome::Failed(reason) = runner.warm(warm, runner::STARTUP_TIMEOUT).await {
            runner.retire();
            let tail = ctx
                .db()
                .revision(&rev.name)
                .ok()
                .flatten()
                .and_then(|r| r.last_failure)
                .map(|f| f.log_tail);
            let keeps = if record.serving_revision.is_some() {
                "; traffic stays as it was"
            } else {
                ""
            };
            return Err(ApiError {
                log_tail: tail,
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "start_failed",
                    format!("revision {} failed to start: {reason}{keeps}", rev.name),
                )
            });
        }
    }
    ctx.db()
        .set_serving_revision(name, &rev.name)
        .map_err(ApiError::internal)?;
    traffic::store(ctx, name, &targets)?;
    let record = service_record(ctx, name)?;
    let resolved = traffic::resolve(&record, &targets)?;
    let routed = traffic::route(ctx, name, &resolved);
    runner.release_warm();
    routed?;
    traffic::prune(ctx, name, &resolved, Some(&rev.name));
    let percent = resolved
        .iter()
        .filter(|t| t.revision == rev.name)
        .map(|t| t.percent)
        .sum();
    tracing::info!(service = %name, revision = %rev.name, percent, "deployed");
    Ok(Deployed {
        service: name.to_owned(),
        revision: rev.name,
        image_digest: rev.image_digest,
        url: ctx.url(name),
        percent,
        tag_url: tag.map(|tag| ctx.url(&tag_host(name, &tag))),
    })
}

/// A tag a deploy gives its new revision: a DNS label whose host no other service has.
fn check_new_tag(ctx: &Ctx, name: &str, tag: &str) -> Result<(), ApiError> {
    validate_tag(name, tag).map_err(|e| ApiError {
        field: Some("tag".into()),
        ..ApiError::from(e)
    })?;
    traffic::check_label_free(ctx, name, &tag_host(name, tag))
}

/// The revision serving before a `--no-traffic` deploy, which keeps the traffic that
/// followed the latest one; refused when there is none yet, or with a traffic block.
fn serving_to_pin(ctx: &Ctx, name: &str, with_traffic: bool) -> Result<String, ApiError> {
    if with_traffic {
        return Err(bad_request(
            "no_traffic",
            "no_traffic and traffic do not go together: traffic already says where \
             requests go"
                .into(),
        ));
    }
    let before = ctx.db().service(name).map_err(ApiError::internal)?;
    before.and_then(|s| s.serving_revision).ok_or_else(|| {
        bad_request(
            "no_traffic",
            format!(
                "--no-traffic: service {name} has no serving revision yet, so its first \
                 revision must take the traffic"
            ),
        )
    })
}

/// The stored service, or 404.
pub(super) fn service_record(ctx: &Ctx, name: &str) -> Result<ServiceRecord, ApiError> {
    ctx.db()
        .service(name)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(name))
}

/// Sets a service's traffic split and tags (`skiff traffic`).
pub async fn set_traffic(
    ctx: &Arc<Ctx>,
    name: &str,
    targets: Vec<TrafficTarget>,
) -> Result<ServiceDetail, ApiError> {
    let _serial = ctx.deploy_lock.lock().await;
    traffic::apply(ctx, name, targets).await?;
    describe(ctx, name)
}

/// Sends all of a service's traffic back to an earlier revision (`to`, or the one
/// before the revision that gets the most now); tags stay.
pub async fn rollback(
    ctx: &Arc<Ctx>,
    name: &str,
    to: Option<String>,
) -> Result<ServiceDetail, ApiError> {
    let _serial = ctx.deploy_lock.lock().await;
    let (targets, target) = traffic::rollback_target(ctx, name, to)?;
    traffic::apply(ctx, name, targets).await?;
    tracing::info!(service = %name, revision = %target, "rolled back");
    describe(ctx, name)
}

/// Removes a service: no new requests; its instances stop once their requests finish.
pub async fn remove(ctx: &Arc<Ctx>, name: &str) -> Result<(), ApiError> {
    let _serial = ctx.deploy_lock.lock().await;
    ctx.db().delete_service(name).map_err(|e| match e {
        skiff_store::StoreError::NoSuchService(_) => ApiError::not_found(name),
        e => ApiError::internal(e),
    })?;
    ctx.router.remove_routes(name);
    for r in ctx.runners_of(name) {
        r.pool.close();
        r.retire();
    }
    Ok(())
}

/// Every service with its current load.
pub fn list(ctx: &Ctx) -> Result<Vec<ServiceSummary>, ApiError> {
    let services = ctx.db().services().map_err(ApiError::internal)?;
    let mut out = Vec::new();
    for s in services {
        let latest = ctx
            .db()
            .revisions(&s.name)
            .map_err(ApiError::internal)?
            .into_iter()
            .next()
            .map(|r| r.name);
        let load = traffic::load(ctx, &s.name);
        out.push(ServiceSummary {
            url: ctx.url(&s.name),
            name: s.name,
            serving_revision: s.serving_revision,
            latest_revision: latest,
            ready_instances: load.ready,
            in_flight: load.in_flight,
            queued: load.queued,
        });
    }
    Ok(out)
}

/// Ended instances shown by `describe`.
const ENDED_SHOWN: usize = 10;

/// A service in detail: revisions, instances, the last failure.
pub fn describe(ctx: &Ctx, name: &str) -> Result<ServiceDetail, ApiError> {
    let service = service_record(ctx, name)?;
    let records = ctx.db().revisions(name).map_err(ApiError::internal)?;
    // A service whose first revision is not up yet has no traffic to show.
    let resolved = traffic::resolve_stored(&service).unwrap_or_default();
    let traffic_detail = resolved
        .iter()
        .map(|t| TrafficDetail {
            revision: t.revision.clone(),
            latest: t.latest,
            percent: t.percent,
            url: t.tag.as_ref().map(|tag| ctx.url(&tag_host(name, tag))),
            tag: t.tag.clone(),
        })
        .collect();
    let mut revisions = Vec::new();
    let mut instances = Vec::new();
    for r in &records {
        let spec: ServiceSpec = serde_json::from_str(&r.spec_json)
            .map_err(|e| ApiError::internal(format!("revision {}: stored spec: {e}", r.name)))?;
        let runner = ctx.runner(&r.name);
        let autoscaler =
            runner
                .as_ref()
                .and_then(|r| r.last_decision())
                .map(|d| AutoscalerDetail {
                    at: d.at,
                    desired: d.decision.desired,
                    ready: d.decision.ready,
                    metric: d.decision.metric.as_str().to_owned(),
                    stable_demand: d.decision.stable_demand,
                    panic_demand: d.decision.panic_demand,
                    panicking: d.decision.panicking,
                    reason: d.decision.reason,
                });
        if let Some(runner) = runner {
            instances.extend(runner.instances().into_iter().map(|i| InstanceDetail {
                id: i.id,
                revision: r.name.clone(),
                state: i.state.into(),
                started_at: i.started_at,
                finished_at: None,
                exit: None,
            }));
        }
        revisions.push(RevisionDetail {
            name: r.name.clone(),
            generation: r.generation,
            image_digest: r.image_digest.clone(),
            created_at: r.created_at,
            percent: resolved
                .iter()
                .filter(|t| t.revision == r.name)
                .map(|t| t.percent)
                .sum(),
            tags: resolved
                .iter()
                .filter(|t| t.revision == r.name)
                .filter_map(|t| t.tag.clone())
                .collect(),
            last_failure: r.last_failure.clone().map(|f| FailureDetail {
                revision: r.name.clone(),
                at: f.at,
                reason: f.reason,
                log_tail: f.log_tail,
            }),
            spec,
            autoscaler,
        });
    }
    let ended = ctx
        .db()
        .service_instances(name)
        .map_err(ApiError::internal)?;
    let ended: Vec<_> = ended
        .into_iter()
        // Sandboxes prepared but never started are not instances anyone saw.
        .filter(|i| i.state != InstanceState::Running && i.pid.is_some())
        .collect();
    for i in ended.iter().rev().take(ENDED_SHOWN) {
        let memory = revisions
            .iter()
            .find(|r| Some(&r.name) == i.revision.as_ref())
            .map_or(0, |r| r.spec.memory_bytes);
        instances.push(InstanceDetail {
            id: i.id.clone(),
            revision: i.revision.clone().unwrap_or_default(),
            state: match i.state {
                InstanceState::Lost => "lost".into(),
                _ => "exited".into(),
            },
            started_at: i.created_at,
            finished_at: i.finished_at,
            exit: i.exit.map(|e| {
                describe_exit(
                    &skiff_sandbox::Exit {
                        code: e.code,
                        signal: e.signal,
                        oom_killed: e.oom_killed,
                    },
                    memory,
                )
            }),
        });
    }
    let last_failure = revisions
        .iter()
        .filter_map(|r| r.last_failure.clone())
        .max_by_key(|f| f.at);
    Ok(ServiceDetail {
        url: ctx.url(name),
        name: service.name,
        created_at: service.created_at,
        serving_revision: service.serving_revision,
        traffic: traffic_detail,
        revisions,
        instances,
        last_failure,
    })
}

/// Routes every stored service as its traffic says again (daemon start).
pub async fn restore(ctx: &Arc<Ctx>) {
    let services = match ctx.db().services() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("reading services: {e}");
            return;
        }
    };
    for s in services {
        if s.serving_revision.is_none() {
            continue;
        }
        let routed = traffic::resolve_stored(&s)
            .and_then(|resolved| traffic::route(ctx, &s.name, &resolved));
        match routed {
            Ok(()) => tracing::info!(service = %s.name, "restored"),
            Err(e) => tracing::error!(service = %s.name, "not restored: {}", e.message),
        }
    }
}
