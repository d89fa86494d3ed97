//! Knative Eventing documents `skiff apply` takes: `sources.knative.dev/v1` PingSource
//! (a schedule), `eventing.knative.dev/v1` Broker (a topic) and Trigger (a subscription
//! of a broker's events, filtered, to a service), with Knative's `delivery` block.
//!
//! As for services, what skiff cannot honour is an error naming the field (a sink that
//! is not a Knative Service of this daemon, CESQL filters, `dataBase64`); what it may
//! ignore is a warning. Durations are ISO 8601, read by the caller's parser (this crate
//! does no time arithmetic of its own). Pure conversion: no daemon here.

use super::model::Ignored;
use crate::{Delivery, EventFormat, Filter, FilterOp, ScheduleSpec, SubscriptionSpec};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const SOURCES_API: &str = "sources.knative.dev/v1";
pub const EVENTING_API: &str = "eventing.knative.dev/v1";
const SERVING_API: &str = "serving.knative.dev/v1";

type Result<T> = std::result::Result<T, String>;

/// Reads an ISO 8601 duration (`PT0.5S`) into milliseconds.
pub type DurationParser<'a> = &'a dyn Fn(&str) -> Result<u64>;

/// A document's metadata: its name counts; labels and annotations are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Where events go (Knative's `Destination`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    #[serde(rename = "ref", default)]
    pub reference: Option<KRef>,
    /// With a ref, a path on it (`/events`); alone, not supported.
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default, rename = "CACerts")]
    pub ca_certs: Ignored,
    #[serde(default)]
    pub audience: Ignored,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KRef {
    #[serde(default)]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Knative's `delivery` block.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KDelivery {
    #[serde(default)]
    pub retry: Option<u32>,
    #[serde(default)]
    pub backoff_policy: Option<String>,
    #[serde(default)]
    pub backoff_delay: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub dead_letter_sink: Option<Destination>,
    #[serde(default)]
    pub retry_after_max: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingSource {
    pub api_version: String,
    pub kind: String,
    pub metadata: Meta,
    pub spec: PingSpec,
    #[serde(default)]
    pub status: Ignored,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingSpec {
    pub schedule: String,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub data_base64: Option<String>,
    pub sink: Destination,
    #[serde(default)]
    pub ce_overrides: Ignored,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Broker {
    pub api_version: String,
    pub kind: String,
    pub metadata: Meta,
    #[serde(default)]
    pub spec: BrokerSpec,
    #[serde(default)]
    pub status: Ignored,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerSpec {
    #[serde(default)]
    pub config: Ignored,
    #[serde(default)]
    pub delivery: Option<KDelivery>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    pub api_version: String,
    pub kind: String,
    pub metadata: Meta,
    pub spec: TriggerSpec,
    #[serde(default)]
    pub status: Ignored,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerSpec {
    pub broker: String,
    #[serde(default)]
    pub filter: Option<AttributesFilter>,
    /// The newer dialect (Knative's "new trigger filters").
    #[serde(default)]
    pub filters: Vec<DialectFilter>,
    pub subscriber: Destination,
    #[serde(default)]
    pub delivery: Option<KDelivery>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributesFilter {
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DialectFilter {
    #[serde(default)]
    pub exact: BTreeMap<String, String>,
    #[serde(default)]
    pub prefix: BTreeMap<String, String>,
    #[serde(default)]
    pub suffix: BTreeMap<String, String>,
    #[serde(default)]
    pub all: Ignored,
    #[serde(default)]
    pub any: Ignored,
    #[serde(default)]
    pub not: Ignored,
    #[serde(default)]
    pub cesql: Ignored,
}

/// What an eventing document asks for.
#[derive(Debug, PartialEq)]
pub enum Eventing {
    Schedule {
        name: String,
        spec: ScheduleSpec,
    },
    Topic {
        name: String,
    },
    Subscription {
        name: String,
        spec: SubscriptionSpec,
    },
}

impl Eventing {
    /// What it is and its name (`schedule tick`).
    pub fn label(&self) -> (&'static str, &str) {
        match self {
            Eventing::Schedule { name, .. } => ("schedule", name),
            Eventing::Topic { name } => ("topic", name),
            Eventing::Subscription { name, .. } => ("subscription", name),
        }
    }
}

/// One eventing document converted, with what was ignored.
#[derive(Debug)]
pub struct ImportedTrigger {
    pub what: Eventing,
    pub warnings: Vec<String>,
}

fn warn_meta(meta: &Meta, warnings: &mut Vec<String>) {
    if let Some(ns) = meta.namespace.as_deref().filter(|ns| *ns != "default") {
        warnings.push(format!(
            "metadata.namespace {ns:?} ignored: skiff has one namespace"
        ));
    }
    for key in meta.other.keys() {
        if !matches!(key.as_str(), "labels" | "annotations") {
            warnings.push(format!("metadata.{key} ignored"));
        }
    }
}

/// The service a destination names, and the path on it.
fn service_of(dest: &Destination, at: &str) -> Result<(String, String)> {
    let Some(r) = &dest.reference else {
        return Err(format!(
            "{at}.uri: only a ref to a Knative Service of this daemon is supported"
        ));
    };
    let api_ok = r.api_version.as_deref().is_none_or(|v| v == SERVING_API);
    if r.kind != "Service" || !api_ok {
        return Err(format!(
            "{at}.ref: {}/{} is not a Knative Service ({SERVING_API}/Service)",
            r.api_version.as_deref().unwrap_or("?"),
            r.kind
        ));
    }
    let path = match dest.uri.as_deref() {
        None | Some("") => "/".to_owned(),
        Some(p) if p.starts_with('/') => p.to_owned(),
        Some(other) => {
            return Err(format!(
                "{at}.uri: {other:?}: with a ref, only a path (/events) is supported"
            ))
        }
    };
    Ok((r.name.clone(), path))
}

fn delivery(d: &KDelivery, at: &str, duration: DurationParser) -> Result<Delivery> {
    let ms = |field: &str, text: &Option<String>| -> Result<Option<u64>> {
        text.as_deref()
            .map(|t| duration(t).map_err(|e| format!("{at}.{field}: {e}")))
            .transpose()
    };
    let dead_letter = d
        .dead_letter_sink
        .as_ref()
        .map(|sink| service_of(sink, &format!("{at}.deadLetterSink")).map(|(name, _)| name))
        .transpose()?;
    if d.retry_after_max.is_some() {
        return Err(format!(
            "{at}.retryAfterMax: not supported (skiff honours Retry-After up to the backoff's cap)"
        ));
    }
    let out = Delivery {
        retries: d.retry,
        backoff_policy: d.backoff_policy.clone(),
        backoff_delay_ms: ms("backoffDelay", &d.backoff_delay)?,
        timeout_ms: ms("timeout", &d.timeout)?,
        dead_letter,
        ..Delivery::default()
    };
    out.check()
        .map_err(|(field, why)| format!("{at}: {field}: {why}"))?;
    Ok(out)
}

fn ping_source(doc: PingSource) -> Result<ImportedTrigger> {
    let mut warnings = Vec::new();
    warn_meta(&doc.metadata, &mut warnings);
    let s = doc.spec;
    if s.data_base64.is_some() {
        return Err("spec.dataBase64: not supported; send text in spec.data".into());
    }
    if s.ce_overrides.is_some() {
        return Err("spec.ceOverrides: not supported".into());
    }
    let (to, path) = service_of(&s.sink, "spec.sink")?;
    let spec = ScheduleSpec {
        cron: s.schedule,
        timezone: s.timezone.unwrap_or_else(|| "UTC".into()),
        to,
        path,
        data: s.data,
        content_type: s.content_type,
        format: EventFormat::Binary,
        delivery: Delivery::default(),
    };
    spec.validate()
        .map_err(|e| format!("spec: {}: {}", e.field, e.why))?;
    Ok(ImportedTrigger {
        what: Eventing::Schedule {
            name: doc.metadata.name,
            spec,
        },
        warnings,
    })
}

fn filters(spec: &TriggerSpec) -> Result<Vec<Filter>> {
    let mut out = Vec::new();
    let mut add = |op: FilterOp, attrs: &BTreeMap<String, String>, at: &str| -> Result<()> {
        for (attribute, value) in attrs {
            let f = Filter::parse(op, &format!("{attribute}={value}"))
                .map_err(|e| format!("{at}: {e}"))?;
            out.push(f);
        }
        Ok(())
    };
    if let Some(f) = &spec.filter {
        add(FilterOp::Exact, &f.attributes, "spec.filter.attributes")?;
    }
    for (i, f) in spec.filters.iter().enumerate() {
        let at = format!("spec.filters[{i}]");
        for (name, set) in [
            ("all", &f.all),
            ("any", &f.any),
            ("not", &f.not),
            ("cesql", &f.cesql),
        ] {
            if set.is_some() {
                return Err(format!(
                    "{at}.{name}: not supported (exact, prefix and suffix are; all of them must match)"
                ));
            }
        }
        add(FilterOp::Exact, &f.exact, &format!("{at}.exact"))?;
        add(FilterOp::Prefix, &f.prefix, &format!("{at}.prefix"))?;
        add(FilterOp::Suffix, &f.suffix, &format!("{at}.suffix"))?;
    }
    Ok(out)
}

fn trigger(
    doc: Trigger,
    brokers: &BTreeMap<String, Delivery>,
    duration: DurationParser,
) -> Result<ImportedTrigger> {
    let mut warnings = Vec::new();
    warn_meta(&doc.metadata, &mut warnings);
    let (to, path) = service_of(&doc.spec.subscriber, "spec.subscriber")?;
    let own = doc
        .spec
        .delivery
        .as_ref()
        .map(|d| delivery(d, "spec.delivery", duration))
        .transpose()?
        .unwrap_or_default();
    // A broker's delivery in the same file is the default of its triggers (Knative's).
    let base = brokers.get(&doc.spec.broker).cloned().unwrap_or_default();
    let spec = SubscriptionSpec {
        topic: doc.spec.broker.clone(),
        to,
        path,
        filters: filters(&doc.spec)?,
        format: EventFormat::Binary,
        delivery: base.merged(&own),
    };
    spec.validate()
        .map_err(|e| format!("spec: {}: {}", e.field, e.why))?;
    Ok(ImportedTrigger {
        what: Eventing::Subscription {
            name: doc.metadata.name,
            spec,
        },
        warnings,
    })
}

/// Converts a stream's eventing documents (given as JSON values, in order): brokers'
/// delivery blocks become their triggers' defaults. `None` for a document of another
/// kind (a Service), which the caller converts.
pub fn import_all(
    docs: &[serde_json::Value],
    duration: DurationParser,
) -> Result<Vec<Option<ImportedTrigger>>> {
    let kind_of = |d: &serde_json::Value| {
        (
            d["apiVersion"].as_str().unwrap_or_default().to_owned(),
            d["kind"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let mut brokers = BTreeMap::new();
    for (i, doc) in docs.iter().enumerate() {
        if kind_of(doc) == (EVENTING_API.into(), "Broker".into()) {
            let b: Broker = serde_json::from_value(doc.clone())
                .map_err(|e| format!("document {}: Broker: {e}", i + 1))?;
            let d = b
                .spec
                .delivery
                .as_ref()
                .map(|d| delivery(d, "spec.delivery", duration))
                .transpose()
                .map_err(|e| format!("document {} (broker {}): {e}", i + 1, b.metadata.name))?;
            brokers.insert(b.metadata.name.clone(), d.unwrap_or_default());
        }
    }
    docs.iter()
        .enumerate()
        .map(|(i, doc)| {
            let (api, kind) = kind_of(doc);
            let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_owned();
            let context = |e: String| format!("document {} ({kind} {name}): {e}", i + 1);
            let parse_err = |e: serde_json::Error| context(e.to_string());
            let converted = match (api.as_str(), kind.as_str()) {
                (SOURCES_API, "PingSource") => {
                    let doc = serde_json::from_value(doc.clone()).map_err(parse_err)?;
                    ping_source(doc).map_err(context)?
                }
                (EVENTING_API, "Broker") => {
                    let b: Broker = serde_json::from_value(doc.clone()).map_err(parse_err)?;
                    let mut warnings = Vec::new();
                    warn_meta(&b.metadata, &mut warnings);
                    if b.spec.config.is_some() {
                        warnings.push("spec.config ignored: a topic has no broker class".into());
                    }
                    ImportedTrigger {
                        what: Eventing::Topic {
                            name: b.metadata.name,
                        },
                        warnings,
                    }
                }
                (EVENTING_API, "Trigger") => {
                    let doc = serde_json::from_value(doc.clone()).map_err(parse_err)?;
                    trigger(doc, &brokers, duration).map_err(context)?
                }
                (SERVING_API, "Service") => return Ok(None),
                _ => {
                    return Err(context(format!(
                        "apiVersion/kind {api}/{kind}: skiff applies {SERVING_API} Service, \
                         {SOURCES_API} PingSource, {EVENTING_API} Broker and Trigger"
                    )))
                }
            };
            Ok(Some(converted))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PT0.5S`-style durations, as the CLI reads them with `skiff_events`.
    fn iso(text: &str) -> Result<u64> {
        let secs = text
            .strip_prefix("PT")
            .and_then(|t| t.strip_suffix('S'))
            .ok_or_else(|| format!("{text:?} is not PTnS"))?;
        let secs: f64 = secs.parse().map_err(|_| format!("{text:?}"))?;
        Ok((secs * 1000.0) as u64)
    }

    fn import(yaml: &str) -> Result<Vec<Option<ImportedTrigger>>> {
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).unwrap();
        import_all(&docs, &iso)
    }

    #[test]
    fn a_ping_source_is_a_schedule_to_its_sinks_service() {
        let got = import(
            r#"
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: tick, namespace: default, labels: {a: b}}
spec:
  schedule: "*/2 * * * *"
  timezone: Europe/Paris
  contentType: application/json
  data: '{"message": "hi"}'
  sink:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: hello}
    uri: /tick
"#,
        )
        .unwrap();
        let one = got.into_iter().next().unwrap().unwrap();
        let Eventing::Schedule { name, spec } = one.what else {
            panic!("{:?}", one.what)
        };
        assert_eq!(name, "tick");
        assert_eq!(
            (
                spec.cron.as_str(),
                spec.timezone.as_str(),
                spec.to.as_str(),
                spec.path.as_str()
            ),
            ("*/2 * * * *", "Europe/Paris", "hello", "/tick")
        );
        assert_eq!(spec.data_type(), Some("application/json"));
        assert!(one.warnings.is_empty(), "{:?}", one.warnings);
    }

    #[test]
    fn a_broker_is_a_topic_and_its_triggers_subscriptions_with_filters_and_delivery() {
        let got = import(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: orders}
spec:
  delivery: {retry: 5, backoffPolicy: linear, backoffDelay: PT0.5S}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: paid}
spec:
  broker: orders
  filter:
    attributes: {type: com.example.order.paid}
  filters:
    - prefix: {source: /shop/}
    - suffix: {subject: .eu}
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: billing}
  delivery: {retry: 1, timeout: PT2S}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: billing}
spec: {template: {spec: {containers: [{image: hello}]}}}
"#,
        )
        .unwrap();
        assert!(
            matches!(&got[0].as_ref().unwrap().what, Eventing::Topic { name } if name == "orders")
        );
        assert!(got[2].is_none(), "a Service is left to the caller");
        let Some(ImportedTrigger {
            what: Eventing::Subscription { name, spec },
            ..
        }) = &got[1]
        else {
            panic!("{:?}", got[1])
        };
        assert_eq!(
            (name.as_str(), spec.topic.as_str(), spec.to.as_str()),
            ("paid", "orders", "billing")
        );
        let f: Vec<(FilterOp, &str, &str)> = spec
            .filters
            .iter()
            .map(|f| (f.op, f.attribute.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(
            f,
            [
                (FilterOp::Exact, "type", "com.example.order.paid"),
                (FilterOp::Prefix, "source", "/shop/"),
                (FilterOp::Suffix, "subject", ".eu"),
            ]
        );
        // The trigger's own knobs over its broker's.
        let d = &spec.delivery;
        assert_eq!(
            (
                d.retries,
                d.backoff_policy.as_deref(),
                d.backoff_delay_ms,
                d.timeout_ms
            ),
            (Some(1), Some("linear"), Some(500), Some(2000))
        );
    }

    #[test]
    fn what_skiff_cannot_honour_is_refused_by_field() {
        let trigger = |extra: &str| {
            format!(
                "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\nspec:\n  broker: b\n{extra}"
            )
        };
        let service =
            "  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: s}}\n";
        for (doc, needle) in [
            (trigger("  subscriber: {uri: 'http://example.com/'}\n"), "spec.subscriber.uri"),
            (
                trigger("  subscriber: {ref: {apiVersion: v1, kind: Pod, name: p}}\n"),
                "not a Knative Service",
            ),
            (trigger(&format!("{service}  filters: [{{cesql: \"type = 'x'\"}}]\n")), "spec.filters[0].cesql"),
            (trigger(&format!("{service}  filter: {{attributes: {{Bad_Name: x}}}}\n")), "spec.filter.attributes"),
            (trigger(&format!("{service}  delivery: {{backoffDelay: soon}}\n")), "spec.delivery.backoffDelay"),
            (
                "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: p}\nspec: {schedule: '* * * * *', dataBase64: aGk=, sink: {ref: {kind: Service, name: s}}}\n".to_owned(),
                "spec.dataBase64",
            ),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n".to_owned(), "v1/ConfigMap"),
        ] {
            let e = import(&doc).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
