//! Deleting revisions nobody needs: past the kept count, with no traffic, no tag, and not
//! the latest ready one. Runs after each change of traffic.

use crate::traffic::Resolved;
use crate::Control;

impl Control {
    /// Deletes the service's revisions past the kept count that get no traffic, have no
    /// tag and are not its latest ready one.
    pub(crate) fn prune(&self, service: &str, resolved: &[Resolved], serving: Option<&str>) {
        let mut protected: Vec<String> = resolved.iter().map(|t| t.revision.clone()).collect();
        protected.extend(serving.map(str::to_owned));
        match self
            .db()
            .prune_revisions(service, self.config.revisions_kept, &protected)
        {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(service, "deleted old revisions {}", gone.join(", "))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(service, "deleting old revisions: {e}"),
        }
    }
}
