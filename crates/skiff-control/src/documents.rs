//! The control plane's documents: what commands take and answer, as the REST API carries
//! them in JSON. Shared by the daemon (which writes them) and the CLI (which reads them),
//! so the two cannot drift apart; `docs/openapi.yaml` describes each one.

use serde::{Deserialize, Serialize};
use skiff_core::{ServiceSpec, SpecPatch, TrafficTarget};
use std::collections::BTreeMap;

/// `PUT /v1/services/{name}`: deploy a new revision.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub spec: ServiceSpec,
    /// The service's traffic from now on (`skiff apply`); absent: it stays as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<TrafficTarget>>,
    /// The new revision gets no traffic: what follows the latest revision stays pinned
    /// to the one serving before (gcloud's `--no-traffic`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_traffic: bool,
    /// A tag for the new revision (moved from wherever it was), reachable at
    /// `TAG-NAME.<domain>` (gcloud's `--tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The new revision's name (`NAME-SUFFIX`, Knative's `spec.template.metadata.name`)
    /// instead of the next `NAME-NNNNN`. A name in use is refused unless it names the
    /// latest revision with this very spec, which then changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
}

/// `PATCH /v1/services/{name}`: a new revision from the latest one's spec with the fields
/// of `patch` changed (a new service: `patch` must name the image).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default)]
    pub patch: SpecPatch,
    /// As in [`DeployRequest`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_traffic: bool,
    /// As in [`DeployRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// The answer to a deploy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deployed {
    pub service: String,
    pub revision: String,
    pub image_digest: String,
    pub url: String,
    /// Share of the service's traffic the new revision gets (0 when traffic is pinned).
    pub percent: u32,
    /// The URL of the new revision's tag, when the deploy gave it one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_url: Option<String>,
}

/// `PUT /v1/services/{name}/traffic`: the whole new traffic block.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficRequest {
    pub traffic: Vec<TrafficTarget>,
}

/// `POST /v1/services/{name}/rollback`: back to `revision`, or the one before.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default)]
    pub revision: Option<String>,
}

/// One entry of a service's traffic, resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficDetail {
    pub revision: String,
    /// It follows the latest ready revision.
    pub latest: bool,
    pub percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The tag's own URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A line of `skiff ls`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    pub url: String,
    pub serving_revision: Option<String>,
    pub latest_revision: Option<String>,
    pub ready_instances: u32,
    pub in_flight: u32,
    pub queued: u32,
}

/// An error from the API: what kind, and a message naming what was wrong.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// invalid_request, invalid_spec, not_found, conflict, start_failed, internal.
    pub kind: String,
    pub message: String,
    /// The spec field at fault, for invalid_spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The failed instance's last log lines, for start_failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// `skiff describe`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceDetail {
    pub name: String,
    pub url: String,
    pub created_at: i64,
    /// Changes with every write to the service; a write may require it (`If-Match`).
    pub version: u64,
    /// The latest ready revision.
    pub serving_revision: Option<String>,
    pub traffic: Vec<TrafficDetail>,
    pub revisions: Vec<RevisionDetail>,
    pub instances: Vec<InstanceDetail>,
    pub last_failure: Option<FailureDetail>,
    /// Its async invocations, when it has had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocations: Option<InvocationCounts>,
    /// The schedules and subscriptions that deliver to it.
    #[serde(default)]
    pub triggers: ServiceTriggers,
}

/// How many of a service's async invocations are where.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct InvocationCounts {
    pub pending: u64,
    pub delivering: u64,
    pub delivered: u64,
    pub dead: u64,
    /// When the oldest not yet delivered was accepted (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_open_ms: Option<i64>,
}

/// `POST /v1/services/{name}/invocations/redrive`: dead invocations to send again.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Which; empty: every dead one.
    #[serde(default)]
    pub ids: Vec<String>,
}

/// What a redrive sent again.
#[derive(Debug, Serialize, Deserialize)]
pub struct Redriven {
    pub redriven: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RevisionDetail {
    pub name: String,
    pub generation: u32,
    pub image_digest: String,
    pub created_at: i64,
    /// Its share of the service's traffic.
    pub percent: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub spec: ServiceSpec,
    pub last_failure: Option<FailureDetail>,
    /// The autoscaler's latest decision, while the revision runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerDetail>,
}

/// What the autoscaler last decided for a revision, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutoscalerDetail {
    /// Unix time of the decision.
    pub at: i64,
    pub desired: u32,
    pub ready: u32,
    /// `concurrency` or `rps`.
    pub metric: String,
    /// Mean demand over the stable window, in the metric's unit.
    pub stable_demand: f64,
    /// Mean demand over the panic window.
    pub panic_demand: f64,
    pub panicking: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureDetail {
    pub revision: String,
    pub at: i64,
    pub reason: String,
    pub log_tail: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InstanceDetail {
    pub id: String,
    pub revision: String,
    /// starting, ready, stopping, exited or lost.
    pub state: String,
    pub started_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// Processes of a running instance the OOM killer ended (a worker may die while the
    /// app serves on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
}

/// One log line of `skiff logs` (the API streams these as NDJSON).
#[derive(Debug, Serialize, Deserialize)]
pub struct LogLine {
    pub time: String,
    pub instance: String,
    pub stream: String,
    pub message: String,
}

/// `PUT /v1/secrets/{name}` (a new secret) and `POST /v1/secrets/{name}/versions` (its
/// next version): the version's data, as a Kubernetes Secret's `data` (base64 values)
/// and `stringData` (text values). `Debug` shows the keys only.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretWrite {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, SecretValue>,
    #[serde(
        default,
        rename = "stringData",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub string_data: BTreeMap<String, SecretValue>,
    /// On creation: the services it may be given to (empty: any); fixed for its life.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

impl std::fmt::Debug for SecretWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretWrite")
            .field("data", &self.data.keys().collect::<Vec<_>>())
            .field("stringData", &self.string_data.keys().collect::<Vec<_>>())
            .field("services", &self.services)
            .finish()
    }
}

/// A value in a [`SecretWrite`]: a JSON string. What else comes is refused without
/// echoing it (serde's own message would quote a number or a boolean).
#[derive(Clone, Default, Serialize)]
#[serde(transparent)]
pub struct SecretValue(pub String);

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretValue, E> {
                Ok(SecretValue(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretValue, E> {
                Ok(SecretValue(v))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretValue, E> {
                Err(E::custom("a secret value must be a string"))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretValue, E> {
                Err(E::custom("a secret value must be a string"))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretValue, E> {
                Err(E::custom("a secret value must be a string"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretValue, E> {
                Err(E::custom("a secret value must be a string"))
            }
        }
        // `deserialize_any`: serde_json answers a number given for a string itself,
        // quoting it; through the visitor, the refusal names no value.
        d.deserialize_any(Visitor)
    }
}

impl SecretWrite {
    /// The data it carries; an error naming the key whose value is not base64, or a key
    /// given twice (in `data` and in `stringData`).
    pub fn into_data(self) -> Result<skiff_secrets::SecretData, String> {
        use base64::Engine;
        let mut data = skiff_secrets::SecretData::new();
        for (key, value) in self.data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.0.as_bytes())
                .map_err(|_| format!("data.{key} is not base64"))?;
            data.insert(&key, bytes);
        }
        for (key, value) in self.string_data {
            if !data.insert(&key, value.0.into_bytes()) {
                return Err(format!("key {key} is in both data and stringData"));
            }
        }
        Ok(data)
    }
}

/// `PATCH /v1/secrets/{name}/versions/{version}`: enable or disable a version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretVersionPatch {
    /// `enabled` or `disabled`.
    pub state: String,
}

/// One version of a secret, as `skiff secret versions` shows it: never its values.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecretVersionInfo {
    pub version: u32,
    /// `enabled` or `disabled`.
    pub state: String,
    pub keys: Vec<String>,
    pub created_at: i64,
}

/// A secret with its versions, newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecretDetail {
    pub name: String,
    pub created_at: i64,
    /// The services it may be given to; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    pub versions: Vec<SecretVersionInfo>,
}

/// A secret in `skiff secret ls`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecretSummary {
    pub name: String,
    pub created_at: i64,
    /// The services it may be given to; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    pub versions: usize,
    /// The newest enabled version (what `latest` means), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<u32>,
    /// Its keys.
    pub keys: Vec<String>,
}

/// `PUT /v1/configmaps/{name}` (`?create=true`: refused if it exists): the whole data.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigMapWrite {
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// A config map: its values are settings, not secrets, and are shown.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConfigMapDetail {
    pub name: String,
    pub data: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One entry of the audit log (`GET /v1/audit`): a control-plane write.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix time.
    pub at: i64,
    pub who: String,
    /// `METHOD /path`.
    pub action: String,
    /// The answer's status.
    pub result: String,
}

/// An async invocation, as `skiff invocations` shows it: never its body.
#[derive(Debug, Serialize, Deserialize)]
pub struct InvocationInfo {
    pub id: String,
    pub service: String,
    /// pending, delivering, delivered or dead.
    pub state: String,
    pub method: String,
    pub target: String,
    pub attempts: u32,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// When the next attempt is due (pending ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// The last attempt's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Why the last attempt failed, or why it was given up on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The trigger that made it (`schedule/NAME`, `subscription/NAME`); none for an
    /// async request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The CloudEvent's type and id, when it carries one in binary mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// The text of kept field `name`, if it is there and is text.
fn field_value(fields: &[u8], name: &str) -> Option<String> {
    let value = crate::invocations::fields::value(fields, name)?;
    std::str::from_utf8(value).ok().map(str::to_owned)
}

impl From<&skiff_store::InvocationRecord> for InvocationInfo {
    fn from(r: &skiff_store::InvocationRecord) -> Self {
        let pending = r.state == skiff_store::InvocationState::Pending;
        InvocationInfo {
            id: r.id.clone(),
            service: r.service.clone(),
            state: r.state.as_str().to_owned(),
            method: r.method.clone(),
            target: r.target.clone(),
            attempts: r.attempts,
            created_ms: r.created_ms,
            next_ms: pending.then_some(r.next_ms),
            finished_ms: r.finished_ms,
            last_status: r.last_status,
            last_error: r.last_error.clone(),
            idempotency_key: r.idempotency_key.clone(),
            origin: r.origin.clone(),
            event_type: field_value(&r.fields, "ce-type"),
            event_id: field_value(&r.fields, "ce-id"),
        }
    }
}

/// `POST /v1/tokens`: a new API token.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub name: String,
    /// admin, developer, viewer or invoker.
    pub role: String,
    /// The services it is limited to; empty: every service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// A token just made: `token` is shown this once, and kept nowhere.
#[derive(Serialize, Deserialize)]
pub struct TokenCreated {
    pub name: String,
    pub role: String,
    pub services: Vec<String>,
    pub token: String,
}

impl std::fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCreated")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

/// A token as `skiff token ls` shows it (never its secret).
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: String,
    pub services: Vec<String>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScheduleDetail {
    pub name: String,
    pub spec: skiff_core::ScheduleSpec,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// The scheduled time of its last run, and of its next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_ms: Option<i64>,
    /// Its events' deliveries, by state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<InvocationCounts>,
}

/// A topic as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TopicDetail {
    pub name: String,
    pub created_ms: i64,
    /// Its subscriptions' names.
    pub subscriptions: Vec<String>,
}

/// A subscription as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubscriptionDetail {
    pub name: String,
    pub spec: skiff_core::SubscriptionSpec,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<InvocationCounts>,
}

/// `PUT /v1/schedules/{name}`, `PUT /v1/subscriptions/{name}`: the spec.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerWrite<T> {
    pub spec: T,
}

/// What publishing an event did: the deliveries it made, one per matching subscription.
#[derive(Debug, Serialize, Deserialize)]
pub struct Published {
    pub topic: String,
    /// The event's id.
    pub id: String,
    /// (subscription, invocation id) for each subscription whose filters it passed.
    pub deliveries: Vec<PublishedDelivery>,
}

/// One delivery an event made.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishedDelivery {
    pub subscription: String,
    pub service: String,
    pub invocation: String,
    /// Already kept from an earlier publish of the same source and id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A service's triggers, for `describe`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ServiceTriggers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
}
