//! Answering questions: every service with its load (`skiff ls`), and one service in
//! detail (`skiff describe`): traffic, revisions, live and ended instances, the
//! autoscaler's last decision, the last failure.

use crate::documents::{
    AutoscalerDetail, FailureDetail, InstanceDetail, RevisionDetail, ServiceDetail, ServiceSummary,
    TrafficDetail,
};
use crate::runtime::ExitStatus;
use crate::{describe_exit, Control, ControlError};
use skiff_core::tag_host;
use skiff_store::InstanceState;

/// Ended instances shown by `describe`.
const ENDED_SHOWN: usize = 10;

/// Services listed under one read of the router's route table.
const ROWS_PER_ROUTES_READ: usize = 256;

impl Control {
    /// Every service with its current load. The route table is read once per
    /// [`ROWS_PER_ROUTES_READ`] services, not once per service, nor once for all: a deploy
    /// waiting to change routes holds back every reader behind it (new connections among
    /// them) for as long as a read lasts.
    pub(crate) fn list(&self) -> Result<Vec<ServiceSummary>, ControlError> {
        let lines = self.db().service_lines()?;
        let mut summaries = Vec::with_capacity(lines.len());
        let mut lines = lines.into_iter().peekable();
        while lines.peek().is_some() {
            self.router.with_routes(|routes| {
                for line in lines.by_ref().take(ROWS_PER_ROUTES_READ) {
                    let load = routes
                        .get(&line.name)
                        .map_or_else(Default::default, crate::traffic::route_load);
                    summaries.push(ServiceSummary {
                        url: self.url(&line.name),
                        name: line.name,
                        serving_revision: line.serving_revision,
                        latest_revision: line.latest_revision,
                        ready_instances: load.ready,
                        in_flight: load.in_flight,
                        queued: load.queued,
                    });
                }
            });
        }
        Ok(summaries)
    }

    /// A service in detail: revisions, instances, the last failure.
    pub(crate) fn describe(&self, name: &str) -> Result<ServiceDetail, ControlError> {
        let service = self.service_record(name)?;
        let records = self.db().revisions(name)?;
        // A service whose first revision is not up yet has no traffic to show.
        let resolved = crate::traffic::resolve_stored(&service).unwrap_or_default();
        let traffic_detail = resolved
            .iter()
            .map(|t| TrafficDetail {
                revision: t.revision.clone(),
                latest: t.latest,
                percent: t.percent,
                url: t.tag.as_ref().map(|tag| self.url(&tag_host(name, tag))),
                tag: t.tag.clone(),
            })
            .collect();
        let mut revisions = Vec::new();
        let mut instances = Vec::new();
        for r in records {
            let runner = self.runner(&r.name);
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
                        reason: d.decision.reason.to_string(),
                    });
            if let Some(runner) = runner {
                instances.extend(runner.instances().into_iter().map(|i| InstanceDetail {
                    id: i.id,
                    revision: r.name.clone(),
                    state: i.phase.as_str().into(),
                    started_at: i.started_at,
                    finished_at: None,
                    exit: None,
                    oom_kills: i.oom_kills,
                }));
            }
            let mine = || resolved.iter().filter(|t| t.revision == r.name);
            revisions.push(RevisionDetail {
                percent: mine().map(|t| t.percent).sum(),
                tags: mine().filter_map(|t| t.tag.clone()).collect(),
                last_failure: r.last_failure.clone().map(|f| FailureDetail {
                    revision: r.name.clone(),
                    at: f.at,
                    reason: f.reason,
                    log_tail: f.log_tail,
                }),
                name: r.name,
                generation: r.generation,
                image_digest: r.image_digest.to_string(),
                created_at: r.created_at,
                spec: r.spec,
                autoscaler,
            });
        }
        self.ended_instances(name, &revisions, &mut instances)?;
        let last_failure = revisions
            .iter()
            .filter_map(|r| r.last_failure.clone())
            .max_by_key(|f| f.at);
        Ok(ServiceDetail {
            url: self.url(name),
            name: service.name,
            created_at: service.created_at,
            version: service.version,
            serving_revision: service.serving_revision,
            traffic: traffic_detail,
            revisions,
            instances,
            last_failure,
            invocations: self.invocation_counts(name)?,
            triggers: self.triggers_of(name)?,
        })
    }

    /// Appends the service's most recent ended instances (exited or lost).
    fn ended_instances(
        &self,
        name: &str,
        revisions: &[RevisionDetail],
        out: &mut Vec<InstanceDetail>,
    ) -> Result<(), ControlError> {
        let ended: Vec<_> = self
            .db()
            .service_instances(name)?
            .into_iter()
            // Sandboxes prepared but never started are not instances anyone saw.
            .filter(|i| i.state != InstanceState::Running && i.pid.is_some())
            .collect();
        for i in ended.iter().rev().take(ENDED_SHOWN) {
            let memory = revisions
                .iter()
                .find(|r| Some(&r.name) == i.revision.as_ref())
                .map_or(0, |r| r.spec.memory_bytes);
            out.push(InstanceDetail {
                id: i.id.clone(),
                revision: i.revision.clone().unwrap_or_default(),
                state: match i.state {
                    InstanceState::Lost => "lost".into(),
                    _ => "exited".into(),
                },
                started_at: i.created_at,
                finished_at: i.finished_at,
                oom_kills: None,
                exit: i.exit.map(|e| {
                    describe_exit(
                        &ExitStatus {
                            code: e.code,
                            signal: e.signal,
                            oom_killed: e.oom_killed,
                        },
                        memory,
                    )
                }),
            });
        }
        Ok(())
    }
}
