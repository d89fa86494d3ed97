//! Deploying, removing, listing and describing services, and reloading them at start.
//! A deploy makes an immutable revision; traffic moves to it at once when nothing is
//! serving, or after one of its instances is ready when the old revision has instances
//! up (so a switch under load never meets a cold start, and a broken revision never takes
//! traffic from a working one).

use super::runner::{self, describe_exit, Outcome, RevisionRunner};
use super::Ctx;
use crate::apitypes::{
    AutoscalerDetail, Deployed, FailureDetail, InstanceDetail, RevisionDetail, ServiceDetail,
    ServiceSummary,
};
use axum::http::StatusCode;
use skiff_core::{revision_name, validate_service_name, ServiceSpec};
use skiff_image::ProcessConfig;
use skiff_router::{PoolConfig, RevisionPool};
use skiff_sandbox::{Limits, SandboxSpec};
use skiff_store::{ImageRecord, InstanceState, RevisionRecord};
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

    fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }

    fn not_found(service: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such service: {service}"),
        )
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
fn template(
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
    let process = if spec.command.is_empty() {
        ProcessConfig::from_image(image)
    } else {
        ProcessConfig::with_command(image, spec.command.clone())
    }
    .map_err(|e| bad(e.into()))?;
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

fn start_runner(
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

/// Deploys a new revision of `name` and routes traffic to it.
pub async fn deploy(ctx: &Arc<Ctx>, name: &str, spec: ServiceSpec) -> Result<Deployed, ApiError> {
    validate_service_name(name)?;
    spec.validate()?;
    let _serial = ctx.deploy_lock.lock().await;
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
    let old = ctx.router.route(name);
    let warm = initial.max(u32::from(old.as_ref().is_some_and(|p| p.load().ready > 0)));
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
            let keeps = old
                .as_ref()
                .map(|p| format!("; traffic stays on {}", p.config().revision))
                .unwrap_or_default();
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
    if let Some(old) = ctx.router.set_route(name, Arc::clone(&runner.pool)) {
        if let Some(old_runner) = ctx.runner(&old.config().revision) {
            old_runner.retire();
        }
    }
    runner.release_warm();
    tracing::info!(service = %name, revision = %rev.name, "serving");
    Ok(Deployed {
        service: name.to_owned(),
        revision: rev.name,
        image_digest: rev.image_digest,
        url: ctx.url(name),
    })
}

/// Removes a service: no new requests; its instances stop once their requests finish.
pub async fn remove(ctx: &Arc<Ctx>, name: &str) -> Result<(), ApiError> {
    let _serial = ctx.deploy_lock.lock().await;
    let revisions = ctx.db().revisions(name).map_err(ApiError::internal)?;
    ctx.db().delete_service(name).map_err(|e| match e {
        skiff_store::StoreError::NoSuchService(_) => ApiError::not_found(name),
        e => ApiError::internal(e),
    })?;
    if let Some(pool) = ctx.router.remove_route(name) {
        pool.close();
    }
    for rev in revisions {
        if let Some(r) = ctx.runner(&rev.name) {
            r.pool.close();
            r.retire();
        }
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
        let load = ctx
            .router
            .route(&s.name)
            .map(|p| p.load())
            .unwrap_or_default();
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
    let service = ctx
        .db()
        .service(name)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(name))?;
    let records = ctx.db().revisions(name).map_err(ApiError::internal)?;
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
            serving: service.serving_revision.as_deref() == Some(r.name.as_str()),
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
        revisions,
        instances,
        last_failure,
    })
}

/// Routes every stored service to its serving revision again (daemon start).
pub async fn restore(ctx: &Arc<Ctx>) {
    let services = match ctx.db().services() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("reading services: {e}");
            return;
        }
    };
    for s in services {
        let Some(rev_name) = s.serving_revision else {
            continue;
        };
        if let Err(e) = restore_one(ctx, &s.name, &rev_name) {
            tracing::error!(service = %s.name, revision = %rev_name, "not restored: {}", e.message);
        }
    }
}

fn restore_one(ctx: &Arc<Ctx>, service: &str, rev_name: &str) -> Result<(), ApiError> {
    let rev = ctx
        .db()
        .revision(rev_name)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(format!("revision {rev_name} is missing")))?;
    let spec: ServiceSpec = serde_json::from_str(&rev.spec_json).map_err(ApiError::internal)?;
    let image = ctx
        .db()
        .resolve_image(&rev.image_digest)
        .map_err(ApiError::internal)?;
    let template = template(ctx, &image, &spec, service, &rev.name)?;
    let runner = start_runner(ctx, &rev, spec, template)?;
    ctx.router.set_route(service, Arc::clone(&runner.pool));
    tracing::info!(service, revision = %rev.name, "restored");
    Ok(())
}
