//! Event triggers as specs: schedules (Knative's PingSource, Cloud Scheduler) and topic
//! subscriptions (Knative's Broker and Trigger, Eventarc), with the filters a
//! subscription puts on CloudEvents attributes and how what they send is delivered.
//!
//! Pure data and rules: the cron pattern itself is checked where it is read
//! (`skiff_events::Schedule`), firing and delivering happen in the control plane.

use crate::{validate_label_name, Delivery, SpecError};
use serde::{Deserialize, Serialize};

/// The most filters on one subscription.
pub const MAX_FILTERS: usize = 16;
/// The most bytes of a schedule's data.
pub const MAX_SCHEDULE_DATA: usize = 64 << 10;

/// How an event goes out over HTTP: CloudEvents' binary mode (attributes as `ce-*`
/// fields, the data as the body; the default) or structured mode (the event as JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    #[default]
    Binary,
    Structured,
}

impl std::str::FromStr for EventFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "binary" => Ok(EventFormat::Binary),
            "structured" => Ok(EventFormat::Structured),
            other => Err(format!("{other:?} is neither binary nor structured")),
        }
    }
}

fn root_path() -> String {
    "/".into()
}

fn is_root(p: &str) -> bool {
    p == "/"
}

fn utc() -> String {
    "UTC".into()
}

/// A schedule: a CloudEvent sent to a service at the times of a cron pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// 5 fields, or 6 with seconds first.
    pub cron: String,
    /// An IANA zone name.
    #[serde(default = "utc")]
    pub timezone: String,
    /// The service it sends to.
    pub to: String,
    /// The path it posts to.
    #[serde(default = "root_path", skip_serializing_if = "is_root")]
    pub path: String,
    /// The event's data, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The data's media type (`text/plain` when data is set without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default)]
    pub format: EventFormat,
    #[serde(default, skip_serializing_if = "Delivery::is_default")]
    pub delivery: Delivery,
}

/// How a filter compares an attribute's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterOp {
    Exact,
    Prefix,
    Suffix,
}

/// One condition on a CloudEvents attribute (`type`, `source`, `subject`, an extension).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub attribute: String,
    pub op: FilterOp,
    pub value: String,
}

impl Filter {
    /// Reads `ATTR=VALUE` with comparison `op`.
    pub fn parse(op: FilterOp, text: &str) -> Result<Filter, String> {
        let (attribute, value) = text.split_once('=').ok_or_else(|| {
            format!("filter {text:?}: want ATTRIBUTE=VALUE (type=com.example.order)")
        })?;
        let filter = Filter {
            attribute: attribute.trim().to_ascii_lowercase(),
            op,
            value: value.to_owned(),
        };
        filter.check()?;
        Ok(filter)
    }

    /// A CloudEvents attribute name is 1 to 20 of `a-z0-9`.
    fn check(&self) -> Result<(), String> {
        let a = &self.attribute;
        if a.is_empty()
            || a.len() > 20
            || !a
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "filter attribute {a:?}: CloudEvents attribute names are 1 to 20 of a-z and 0-9"
            ));
        }
        if self.op != FilterOp::Exact && self.value.is_empty() {
            return Err(format!(
                "filter on {a}: an empty prefix or suffix matches everything"
            ));
        }
        Ok(())
    }

    /// Whether an event whose attribute has `value` (`None`: it has none) passes.
    pub fn passes(&self, value: Option<&str>) -> bool {
        let Some(value) = value else {
            return false;
        };
        match self.op {
            FilterOp::Exact => value == self.value,
            FilterOp::Prefix => value.starts_with(&self.value),
            FilterOp::Suffix => value.ends_with(&self.value),
        }
    }
}

/// A topic's push subscription: the events that pass every filter go to a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    pub topic: String,
    /// The service it delivers to.
    pub to: String,
    #[serde(default = "root_path", skip_serializing_if = "is_root")]
    pub path: String,
    /// All must pass (none: every event).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub format: EventFormat,
    #[serde(default, skip_serializing_if = "Delivery::is_default")]
    pub delivery: Delivery,
}

impl SubscriptionSpec {
    /// Whether an event, whose attributes `attribute` gives, passes every filter.
    pub fn matches<'a>(&self, attribute: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.filters
            .iter()
            .all(|f| f.passes(attribute(&f.attribute)))
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        validate_label_name("topic", &self.topic).map_err(|e| at("topic", e))?;
        validate_label_name("service", &self.to).map_err(|e| at("to", e))?;
        check_path(&self.path)?;
        if self.filters.len() > MAX_FILTERS {
            return Err(SpecError {
                field: "filters",
                why: format!("{}: at most {MAX_FILTERS}", self.filters.len()),
            });
        }
        for f in &self.filters {
            f.check().map_err(|why| SpecError {
                field: "filters",
                why,
            })?;
        }
        check_delivery(&self.delivery)
    }
}

impl ScheduleSpec {
    /// Everything but the cron pattern and zone, which `skiff_events` reads.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_label_name("service", &self.to).map_err(|e| at("to", e))?;
        check_path(&self.path)?;
        if let Some(data) = &self.data {
            if data.len() > MAX_SCHEDULE_DATA {
                return Err(SpecError {
                    field: "data",
                    why: format!("{} bytes: at most {MAX_SCHEDULE_DATA}", data.len()),
                });
            }
        }
        if let Some(ct) = &self.content_type {
            if ct.is_empty() || !ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(SpecError {
                    field: "content-type",
                    why: format!("{ct:?} is not a media type"),
                });
            }
        }
        check_delivery(&self.delivery)
    }

    /// The data's media type, when there is data.
    pub fn data_type(&self) -> Option<&str> {
        self.data
            .as_ref()
            .map(|_| self.content_type.as_deref().unwrap_or("text/plain"))
    }
}

fn at(field: &'static str, e: SpecError) -> SpecError {
    SpecError { field, why: e.why }
}

/// An origin-form path: `/`, then visible ASCII.
fn check_path(path: &str) -> Result<(), SpecError> {
    if path.starts_with('/') && path.len() <= 1024 && path.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(SpecError {
            field: "path",
            why: format!("{path:?}: want a path starting with '/', without spaces"),
        })
    }
}

fn check_delivery(d: &Delivery) -> Result<(), SpecError> {
    d.check().map_err(|(field, why)| SpecError { field, why })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(filters: &[(&str, FilterOp, &str)]) -> SubscriptionSpec {
        SubscriptionSpec {
            topic: "orders".into(),
            to: "billing".into(),
            path: "/".into(),
            filters: filters
                .iter()
                .map(|(a, op, v)| Filter {
                    attribute: a.to_string(),
                    op: *op,
                    value: v.to_string(),
                })
                .collect(),
            format: EventFormat::Binary,
            delivery: Delivery::default(),
        }
    }

    #[test]
    fn filters_match_exactly_by_prefix_and_by_suffix_all_together() {
        let event = |name: &str| match name {
            "type" => Some("com.example.order.created"),
            "source" => Some("/shop/eu"),
            "region" => Some("eu-west"),
            _ => None,
        };
        assert!(sub(&[]).matches(event));
        assert!(sub(&[("type", FilterOp::Exact, "com.example.order.created")]).matches(event));
        assert!(!sub(&[("type", FilterOp::Exact, "com.example.order")]).matches(event));
        assert!(sub(&[("type", FilterOp::Prefix, "com.example.")]).matches(event));
        assert!(sub(&[("type", FilterOp::Suffix, ".created")]).matches(event));
        assert!(!sub(&[("type", FilterOp::Suffix, ".paid")]).matches(event));
        assert!(sub(&[("region", FilterOp::Exact, "eu-west")]).matches(event));
        // Every filter must pass; a missing attribute passes none.
        assert!(!sub(&[
            ("type", FilterOp::Prefix, "com.example."),
            ("source", FilterOp::Exact, "/shop/us"),
        ])
        .matches(event));
        assert!(!sub(&[("subject", FilterOp::Exact, "")]).matches(event));
    }

    #[test]
    fn filters_and_specs_refuse_bad_input_by_name() {
        assert_eq!(
            Filter::parse(FilterOp::Exact, "Type=x").unwrap().attribute,
            "type"
        );
        assert!(Filter::parse(FilterOp::Exact, "type").is_err());
        assert!(Filter::parse(FilterOp::Exact, "ty_pe=x").is_err());
        assert!(Filter::parse(FilterOp::Prefix, "type=").is_err());
        assert!(Filter::parse(FilterOp::Exact, "type=").is_ok());
        let mut s = sub(&[]);
        assert!(s.validate().is_ok());
        s.path = "no-slash".into();
        assert_eq!(s.validate().unwrap_err().field, "path");
        s.path = "/".into();
        s.to = "Bad_Name".into();
        assert_eq!(s.validate().unwrap_err().field, "to");
        let schedule = ScheduleSpec {
            cron: "* * * * *".into(),
            timezone: "UTC".into(),
            to: "hello".into(),
            path: "/".into(),
            data: Some("x".repeat(MAX_SCHEDULE_DATA + 1)),
            content_type: None,
            format: EventFormat::Binary,
            delivery: Delivery::default(),
        };
        assert_eq!(schedule.validate().unwrap_err().field, "data");
    }

    #[test]
    fn a_schedules_data_is_text_unless_it_says_otherwise() {
        let mut s: ScheduleSpec =
            serde_json::from_str(r#"{"cron":"* * * * *","to":"hello"}"#).unwrap();
        assert_eq!((s.timezone.as_str(), s.path.as_str()), ("UTC", "/"));
        assert_eq!(s.data_type(), None);
        s.data = Some("hi".into());
        assert_eq!(s.data_type(), Some("text/plain"));
        s.content_type = Some("application/json".into());
        assert_eq!(s.data_type(), Some("application/json"));
    }
}
