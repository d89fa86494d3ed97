//! Deploying and removing services, and reloading them at start. A deploy makes an
//! immutable revision; traffic moves to it at once when nothing is serving, or after one
//! of its instances is ready when the old revision has instances up (so a switch under
//! load never meets a cold start, and a broken revision never takes traffic from a
//! working one).

use crate::documents::{DeployRequest, Deployed, UpdateRequest};
use crate::revision::Revision;
use crate::runner::{Outcome, RevisionRunner, STARTUP_TIMEOUT};
use crate::{Control, ControlError};
use skiff_core::{revision_name, tag_host, validate_service_name, validate_tag};
use skiff_router::{PoolConfig, RevisionPool};
use skiff_store::{RevisionRecord, ServiceRecord};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

impl Control {
    /// Resolves a stored revision again (daemon start, traffic back to an old revision).
    pub(crate) fn resolve_stored(&self, rev: &RevisionRecord) -> Result<Revision, ControlError> {
        let image = self
            .db()
            .resolve_image(&rev.image_digest.to_string())
            .map_err(|e| ControlError::internal(format!("revision {}: {e}", rev.name)))?;
        Revision::resolve(&self.images, &image, &rev.spec, &rev.service, &rev.name)
    }

    /// Starts the runner of `revision`: its pool and its reconcile loop.
    pub(crate) fn start_runner(
        self: &Arc<Self>,
        revision: Revision,
    ) -> Result<Arc<RevisionRunner>, ControlError> {
        let scaling = self.config.scaling.settings_for(&revision.spec)?;
        let pool = RevisionPool::new(PoolConfig {
            revision: revision.name.clone(),
            concurrency: revision.spec.concurrency,
            queue_limit: self.config.queue_depth,
            timeout: Duration::from_millis(revision.spec.timeout_ms),
        });
        let runner = RevisionRunner::new(Arc::clone(self), Arc::new(revision), pool, scaling);
        self.add_runner(Arc::clone(&runner));
        runner.spawn();
        Ok(runner)
    }

    /// An update's whole deploy request: the latest revision's spec with the patch on it.
    pub(crate) fn merged(
        &self,
        name: &str,
        req: UpdateRequest,
    ) -> Result<DeployRequest, ControlError> {
        let latest = self.db().revisions(name)?.into_iter().next();
        // With no revision to start from, a patch without an image names no service.
        let absent = latest.is_none();
        let spec = req.patch.apply(name, latest.map(|r| r.spec)).map_err(|e| {
            match absent && e.field == "image" {
                true => ControlError::NotFound(e.why),
                false => ControlError::bad_field(e.field, e.why),
            }
        })?;
        Ok(DeployRequest {
            spec,
            traffic: None,
            no_traffic: req.no_traffic,
            tag: req.tag,
            revision_name: None,
        })
    }

    /// Deploys a new revision of `name`. Traffic that follows the latest revision moves
    /// to it once it is known to start (after one ready instance when the service is
    /// busy or has never served; at once when it is idle); pinned traffic stays where it
    /// is. With a
    /// traffic block (`skiff apply`), the service's traffic becomes that once the
    /// revision is up. With `no_traffic` the new revision gets none; with `tag` it gets
    /// that tag. The caller holds the write lock.
    pub(crate) async fn deploy(
        self: &Arc<Self>,
        name: &str,
        req: DeployRequest,
    ) -> Result<Deployed, ControlError> {
        let DeployRequest {
            spec,
            traffic: new_traffic,
            no_traffic,
            tag,
            revision_name: chosen,
        } = req;
        validate_service_name(name)?;
        spec.validate()?;
        // A dead-letter service must be there (or be this one).
        if let Some((sink, _)) = spec.delivery.dead_letter_sink() {
            if sink != name {
                self.require_dead_letter(&spec.delivery)?;
            }
        }
        // Every secret it names opens now, with the keys it asks for.
        self.check_secrets(name, &spec.secrets)?;
        if let Some(total) = host_memory() {
            if spec.memory_bytes > total {
                return Err(ControlError::invalid_spec(
                    "memory",
                    format!(
                        "memory: {} MiB is more than this host has ({} MiB)",
                        spec.memory_bytes >> 20,
                        total >> 20
                    ),
                ));
            }
        }
        if let Some(chosen) = &chosen {
            if let Some(same) = self.named_revision(name, chosen, &spec)? {
                return Ok(same);
            }
        }
        self.check_label_free(name, name)?;
        if let Some(t) = &new_traffic {
            self.check_traffic(name, t)?;
        }
        if let Some(tag) = &tag {
            self.check_new_tag(name, tag)?;
        }
        let serving_before = if no_traffic {
            Some(self.serving_to_pin(name, new_traffic.is_some())?)
        } else {
            None
        };
        // A registry's image is fetched at every deploy, so a tag resolves to what it
        // names now; the revision keeps that digest whatever the tag does later.
        // Pushed to this daemon's own registry: in the store already, by that name.
        let own =
            self.config.own_registry.as_deref().is_some_and(|own| {
                skiff_registry::registry_of(&spec.image).is_ok_and(|r| r == own)
            });
        if skiff_registry::names_registry(&spec.image) && !own {
            self.pull_image(&spec.image).await?;
        }
        let image = self
            .db()
            .resolve_image(&spec.image)
            .map_err(|e| ControlError::invalid_spec("image", format!("image: {e}")))?;
        // Everything that can be wrong with the spec is found before a revision is written.
        Revision::resolve(&self.images, &image, &spec, name, &revision_name(name, 0))?;
        self.config.scaling.settings_for(&spec)?;
        let name_of = |service: &str, generation: u32| match &chosen {
            Some(chosen) => chosen.clone(),
            None => revision_name(service, generation),
        };
        let rev = self
            .db()
            .create_revision(name, &image.digest, &spec, name_of)?;
        let revision = Revision::resolve(&self.images, &image, &spec, name, &rev.name)?;
        let initial = self.config.scaling.initial_scale(&spec);
        let runner = self.start_runner(revision)?;
        let record = self.service_record(name)?;
        let mut targets = match new_traffic {
            Some(t) => t,
            None => crate::traffic::stored(&record),
        };
        if let Some(serving) = &serving_before {
            crate::traffic::pin_latest(&mut targets, serving);
        }
        if let Some(tag) = &tag {
            crate::traffic::move_tag(&mut targets, tag, &rev.name);
        }
        let follows_latest = targets
            .iter()
            .any(|t| t.revision.is_none() && t.percent > 0);
        let busy = follows_latest && self.is_busy(name);
        // A service's first revision is proved by one instance before it is reported as
        // serving, as Cloud Run does: a broken image fails the deploy, not every request.
        // An explicit initial scale of 0 skips the proof (Knative's zero initial scale).
        let first = follows_latest
            && record.serving_revision.is_none()
            && spec.autoscaling.initial_scale != Some(0);
        let warm = initial.max(u32::from(busy || first));
        if warm > 0 {
            if let Outcome::Failed(reason) = runner.warm(warm, STARTUP_TIMEOUT).await {
                runner.retire();
                let tail = self
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
                return Err(ControlError::StartFailed {
                    reason: format!("revision {} failed to start: {reason}{keeps}", rev.name),
                    log_tail: tail,
                });
            }
        }
        self.db().set_serving_revision(name, &rev.name)?;
        self.store_traffic(name, &targets)?;
        let record = self.service_record(name)?;
        let resolved = crate::traffic::resolve(&record, &targets)?;
        let routed = self.route(name, &resolved);
        runner.release_warm();
        routed?;
        self.prune(name, &resolved, Some(&rev.name));
        let percent = resolved
            .iter()
            .filter(|t| t.revision == rev.name)
            .map(|t| t.percent)
            .sum();
        tracing::info!(service = %name, revision = %rev.name, percent, "deployed");
        Ok(Deployed {
            service: name.to_owned(),
            revision: rev.name,
            image_digest: rev.image_digest.to_string(),
            url: self.url(name),
            percent,
            tag_url: tag.map(|tag| self.url(&tag_host(name, &tag))),
        })
    }

    /// Pulls `reference` into the image store (what is stored already is not fetched
    /// again); a failure removes all it brought and names the registry.
    async fn pull_image(&self, reference: &str) -> Result<(), ControlError> {
        let upstream = |e: skiff_registry::RegistryError| {
            ControlError::Upstream(format!("pulling {reference}: {e}"))
        };
        let registries = skiff_registry::Registries::load(&self.config.home)
            .map_err(|e| ControlError::internal(format!("registry settings: {e}")))?;
        let opts =
            registries.options_for(&skiff_registry::registry_of(reference).map_err(upstream)?);
        match skiff_registry::fetch(&self.images, reference, &opts).await {
            Ok(image) => {
                let pulled = image
                    .install(&self.images, &mut self.db())
                    .map_err(upstream)?;
                tracing::info!(image = %reference, digest = %pulled.digest, "pulled");
                Ok(())
            }
            Err(failed) => Err(upstream(failed.give_up(&self.images, &self.db()))),
        }
    }

    /// A revision name a deploy chose: refused when another revision (of any service)
    /// has it, unless it is this service's latest with the same spec; then the deploy is
    /// that revision again, as re-applying a Knative document changes nothing.
    fn named_revision(
        &self,
        name: &str,
        chosen: &str,
        spec: &skiff_core::ServiceSpec,
    ) -> Result<Option<Deployed>, ControlError> {
        skiff_core::validate_revision_name(name, chosen)?;
        let Some(existing) = self.db().revision(chosen)? else {
            return Ok(None);
        };
        let latest = self.db().revisions(name)?.into_iter().next();
        let is_latest = latest.as_ref().is_some_and(|l| l.name == existing.name);
        if existing.service != name || !is_latest || existing.spec != *spec {
            return Err(ControlError::Conflict(format!(
                "revision {chosen} exists already with another template: name the new \
                 template otherwise, or leave the name out (revisions never change)"
            )));
        }
        let record = self.service_record(name)?;
        let percent = crate::traffic::resolve_stored(&record)
            .unwrap_or_default()
            .iter()
            .filter(|t| t.revision == existing.name)
            .map(|t| t.percent)
            .sum();
        Ok(Some(Deployed {
            service: name.to_owned(),
            revision: existing.name,
            image_digest: existing.image_digest.to_string(),
            url: self.url(name),
            percent,
            tag_url: None,
        }))
    }

    /// A tag a deploy gives its new revision: a DNS label whose host no other service has.
    fn check_new_tag(&self, name: &str, tag: &str) -> Result<(), ControlError> {
        validate_tag(name, tag).map_err(|e| ControlError::invalid_spec("tag", e.to_string()))?;
        self.check_label_free(name, &tag_host(name, tag))
    }

    /// The revision serving before a `--no-traffic` deploy, which keeps the traffic that
    /// followed the latest one; refused when there is none yet, or with a traffic block.
    fn serving_to_pin(&self, name: &str, with_traffic: bool) -> Result<String, ControlError> {
        if with_traffic {
            return Err(ControlError::bad_field(
                "no_traffic",
                "no_traffic and traffic do not go together: traffic already says where \
                 requests go",
            ));
        }
        let before = self.db().service(name)?;
        before.and_then(|s| s.serving_revision).ok_or_else(|| {
            ControlError::bad_field(
                "no_traffic",
                format!(
                    "--no-traffic: service {name} has no serving revision yet, so its first \
                     revision must take the traffic"
                ),
            )
        })
    }

    /// The stored service, or not found.
    pub(crate) fn service_record(&self, name: &str) -> Result<ServiceRecord, ControlError> {
        self.db()
            .service(name)?
            .ok_or_else(|| ControlError::no_service(name))
    }

    /// Removes a service: no new requests; its instances stop once their requests finish.
    /// The caller holds the write lock.
    pub(crate) fn remove(&self, name: &str) -> Result<(), ControlError> {
        self.write_freeing_space(|db| db.delete_service(name))
            .map_err(|e| match e {
                skiff_store::StoreError::NoSuchService(_) => ControlError::no_service(name),
                e => ControlError::internal(e),
            })?;
        self.router.remove_routes(name);
        for r in self.runners_of(name) {
            r.pool.close();
            r.retire();
        }
        // Instances still running are forgotten as they end (see finish_record).
        self.forget_logs_of_removed(name);
        Ok(())
    }

    /// Deletes the rows and log files of a removed service's ended instances.
    pub(crate) fn forget_logs_of_removed(&self, name: &str) {
        match self.write_freeing_space(|db| db.forget_ended_instances(name)) {
            Ok(logs) => logs.iter().for_each(|l| crate::logs::delete(Path::new(l))),
            Err(e) => tracing::warn!(service = %name, "forgetting removed instances: {e}"),
        }
    }

    /// Routes every stored service as its traffic says again (daemon start).
    pub async fn restore(self: &Arc<Self>) {
        let services = match self.db().services() {
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
            let routed = crate::traffic::resolve_stored(&s)
                .and_then(|resolved| self.route(&s.name, &resolved));
            match routed {
                Ok(()) => tracing::info!(service = %s.name, "restored"),
                Err(e) => tracing::error!(service = %s.name, "not restored: {e}"),
            }
        }
    }
}

/// The host's memory (MemTotal), if /proc says.
fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}
