//! A service's traffic: which revisions get what share of its requests, and the tags
//! that name a revision at a URL of its own (`TAG-NAME.<domain>`), as Knative's
//! `spec.traffic` has them. Pure data and its rules; resolving "the latest revision" and
//! checking that pinned revisions exist is the daemon's.

use crate::service::{is_dns_label, SpecError};
use serde::{Deserialize, Serialize};

/// Longest DNS label: a tag's host `TAG-NAME` must fit in one.
const MAX_LABEL: usize = 63;

/// One entry of a service's traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficTarget {
    /// The revision pinned; `None` follows the latest ready revision (Knative's
    /// `latestRevision: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Share of the service's requests, 0-100.
    #[serde(default)]
    pub percent: u32,
    /// A name for this target, reachable at `TAG-NAME.<domain>` whatever its percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl TrafficTarget {
    /// `percent` of the traffic to the latest ready revision.
    pub fn latest(percent: u32) -> TrafficTarget {
        TrafficTarget {
            revision: None,
            percent,
            tag: None,
        }
    }

    /// `percent` of the traffic to `revision`.
    pub fn pinned(revision: impl Into<String>, percent: u32) -> TrafficTarget {
        TrafficTarget {
            revision: Some(revision.into()),
            percent,
            tag: None,
        }
    }
}

/// The traffic of a service that has not set one: all to the latest ready revision.
pub fn default_traffic() -> Vec<TrafficTarget> {
    vec![TrafficTarget::latest(100)]
}

/// Checks a service's traffic: percents sum to 100, tags are DNS labels that fit in
/// front of the service's name and are unique, pinned revisions belong to the service.
pub fn validate_traffic(service: &str, traffic: &[TrafficTarget]) -> Result<(), SpecError> {
    let bad = |why: String| {
        Err(SpecError {
            field: "traffic",
            why,
        })
    };
    if traffic.is_empty() {
        return bad("must name at least one target".into());
    }
    let total: u64 = traffic.iter().map(|t| u64::from(t.percent)).sum();
    if total != 100 {
        return bad(format!("percents add up to {total}, not 100"));
    }
    let mut tags = Vec::new();
    for t in traffic {
        if let Some(rev) = &t.revision {
            // Generated names (SERVICE-00001) and chosen ones (SERVICE-blue) alike.
            if crate::validate_revision_name(service, rev).is_err() {
                return bad(format!("{rev:?} is not a revision of service {service}"));
            }
        }
        if let Some(tag) = &t.tag {
            validate_tag(service, tag)?;
            if tags.contains(&tag) {
                return bad(format!("tag {tag:?} is used twice"));
            }
            tags.push(tag);
        }
    }
    Ok(())
}

/// A tag is a DNS label of `[a-z0-9-]` starting with a letter, and `TAG-SERVICE` must
/// fit in one label.
pub fn validate_tag(service: &str, tag: &str) -> Result<(), SpecError> {
    let room = MAX_LABEL.saturating_sub(service.len() + 1);
    if is_dns_label(tag, room) {
        Ok(())
    } else {
        Err(SpecError {
            field: "traffic",
            why: format!(
                "tag {tag:?}: want 1-{room} characters of [a-z0-9-], starting with a letter, \
                 not ending with '-' (TAG-{service} must be a DNS label)"
            ),
        })
    }
}

/// The host label a tag of `service` answers at.
pub fn tag_host(service: &str, tag: &str) -> String {
    format!("{tag}-{service}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(mut t: TrafficTarget, tag: &str) -> TrafficTarget {
        t.tag = Some(tag.into());
        t
    }

    #[test]
    fn splits_must_add_up_to_100() {
        let ok = [
            TrafficTarget::pinned("api-00001", 90),
            TrafficTarget::latest(10),
        ];
        assert!(validate_traffic("api", &ok).is_ok());
        let e = validate_traffic("api", &[TrafficTarget::latest(90)]).unwrap_err();
        assert_eq!(e.to_string(), "traffic: percents add up to 90, not 100");
        assert!(validate_traffic("api", &[]).is_err());
    }

    #[test]
    fn pinned_revisions_must_be_the_services() {
        let e = validate_traffic("api", &[TrafficTarget::pinned("web-00001", 100)]).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"web-00001\" is not a revision of service api"),
            "{e}"
        );
        // A chosen name (Knative's template name) is the service's too; whether such a
        // revision exists, and is this service's, the control plane looks up.
        assert!(validate_traffic("api", &[TrafficTarget::pinned("api-x", 100)]).is_ok());
        assert!(validate_traffic("api", &[TrafficTarget::pinned("apix-1", 100)]).is_err());
        assert!(validate_traffic("api", &[TrafficTarget::pinned("api", 100)]).is_err());
    }

    #[test]
    fn tags_are_unique_dns_labels_that_fit() {
        let t = [
            tagged(TrafficTarget::latest(100), "candidate"),
            tagged(TrafficTarget::pinned("api-00001", 0), "stable"),
        ];
        assert!(validate_traffic("api", &t).is_ok());
        let dup = [
            tagged(TrafficTarget::latest(100), "a"),
            tagged(TrafficTarget::pinned("api-00001", 0), "a"),
        ];
        assert!(validate_traffic("api", &dup)
            .unwrap_err()
            .to_string()
            .contains("used twice"));
        for bad in ["", "Blue", "1st", "b-", "a.b", &"x".repeat(60)] {
            assert!(validate_tag("api", bad).is_err(), "{bad:?}");
        }
        assert_eq!(tag_host("api", "blue"), "blue-api");
    }
}
