//! `docs/openapi.yaml` and the documents the API carries stay in step: each document,
//! filled in completely, has exactly the fields its schema lists, nested ones too. A field
//! added to a document (the example below then has to set it) fails here until the
//! OpenAPI document describes it; a field removed fails until the schema drops it.

use serde::Serialize;
use serde_json::{json, Value};
use skiff_control::documents::*;
use skiff_core::{Autoscaling, Probe, ProbePatch, ServiceSpec, SpecPatch, TrafficTarget};

fn openapi() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// Compares the keys of `value` with the properties of `schema`, following `$ref`s and
/// array items; returns each difference as `where: what`.
fn drift(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    };
    match value {
        // A map: every value follows `additionalProperties`.
        Value::Object(fields)
            if schema
                .get("additionalProperties")
                .is_some_and(Value::is_object) =>
        {
            for (k, v) in fields {
                drift(
                    doc,
                    &schema["additionalProperties"],
                    v,
                    &format!("{at}.{k}"),
                    out,
                );
            }
        }
        Value::Object(fields) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                out.push(format!("{at}: the schema has no properties"));
                return;
            };
            for (k, v) in fields {
                match props.get(k) {
                    Some(s) => drift(doc, s, v, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}: not in docs/openapi.yaml")),
                }
            }
            for k in props.keys() {
                if !fields.contains_key(k) {
                    out.push(format!(
                        "{at}.{k}: documented, but the document has no such field"
                    ));
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                drift(doc, &schema["items"], v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn check<T: Serialize>(name: &str, example: &T) {
    let doc = openapi();
    let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
    let mut out = Vec::new();
    drift(
        &doc,
        &schema,
        &serde_json::to_value(example).unwrap(),
        name,
        &mut out,
    );
    assert!(
        out.is_empty(),
        "docs/openapi.yaml drifted from the code:\n{}",
        out.join("\n")
    );
}

fn probe() -> Probe {
    Probe {
        http_path: Some("/healthz".into()),
        exec: vec!["true".into()],
        period_ms: 1,
        timeout_ms: 1,
        failure_threshold: 1,
        initial_delay_ms: 1,
    }
}

fn autoscaling() -> Autoscaling {
    Autoscaling {
        metric: Some("rps".into()),
        target: Some(1.0),
        target_utilization_percentage: Some(1.0),
        window_ms: Some(1),
        panic_window_percentage: Some(1.0),
        panic_threshold_percentage: Some(1.0),
        max_scale_up_rate: Some(1.0),
        max_scale_down_rate: Some(1.0),
        scale_to_zero_grace_ms: Some(1),
        initial_scale: Some(1),
    }
}

fn spec() -> ServiceSpec {
    ServiceSpec {
        image: "hello".into(),
        port: 1,
        env: vec!["A=1".into()],
        command: vec!["serve".into()],
        entrypoint: vec!["/app".into()],
        memory_bytes: 1,
        cpu_millis: 1,
        concurrency: 1,
        min_instances: 1,
        max_instances: 1,
        timeout_ms: 1,
        idle_timeout_ms: 1,
        startup_probe: Some("/".into()),
        readiness_probe: Some(probe()),
        liveness_probe: Some(probe()),
        autoscaling: autoscaling(),
        cpu_throttling: true,
        working_dir: Some("/srv".into()),
        init: false,
        user: Some("1000:1000".into()),
        run_as_non_root: true,
        read_only: true,
        cap_drop: vec!["ALL".into()],
        egress: skiff_core::EgressMode::None,
        egress_allow: skiff_core::parse_egress_rules("10.0.0.0/8:5432").unwrap(),
        secrets: vec!["DB=db:latest".parse().unwrap()],
        allow_unauthenticated: false,
        allowed_callers: vec!["front".into()],
        host_users: true,
        delivery: skiff_core::Delivery {
            retries: Some(5),
            backoff_policy: Some("linear".into()),
            backoff_delay_ms: Some(500),
            timeout_ms: Some(1000),
            dead_letter: Some("store".into()),
            max_in_flight: Some(1),
            max_per_second: Some(1),
            max_age_ms: Some(1),
        },
    }
}

fn target() -> TrafficTarget {
    TrafficTarget {
        revision: Some("hello-00001".into()),
        percent: 100,
        tag: Some("stable".into()),
    }
}

fn failure() -> FailureDetail {
    FailureDetail {
        revision: "hello-00001".into(),
        at: 1,
        reason: "r".into(),
        log_tail: "t".into(),
    }
}

#[test]
fn requests_match_the_openapi_document() {
    check(
        "DeployRequest",
        &DeployRequest {
            spec: spec(),
            traffic: Some(vec![target()]),
            no_traffic: true,
            tag: Some("t".into()),
            revision_name: Some("hello-blue".into()),
        },
    );
    let probe_patch = ProbePatch {
        kind: Some("tcp".into()),
        period_ms: Some(1),
        failure_threshold: Some(1),
    };
    check(
        "UpdateRequest",
        &UpdateRequest {
            patch: SpecPatch {
                image: Some("i".into()),
                port: Some(1),
                env: Some(vec![]),
                update_env: vec!["A=1".into()],
                remove_env: vec!["B".into()],
                memory_bytes: Some(1),
                cpu_millis: Some(1),
                concurrency: Some(1),
                min_instances: Some(1),
                max_instances: Some(1),
                timeout_ms: Some(1),
                idle_timeout_ms: Some(1),
                startup_probe: Some("/".into()),
                command: Some(vec![]),
                cpu_throttling: Some(true),
                working_dir: Some("/srv".into()),
                init: Some(false),
                user: Some("app".into()),
                read_only: Some(true),
                cap_drop: Some(vec![]),
                egress: Some(skiff_core::EgressMode::None),
                egress_allow: Some(vec![]),
                secrets: Some(vec!["DB=db:1".parse().unwrap()]),
                update_secrets: vec!["A=a/k:latest".parse().unwrap()],
                remove_secrets: vec!["B".into()],
                allow_unauthenticated: Some(false),
                allowed_callers: Some(vec!["*".into()]),
                host_users: Some(true),
                delivery: skiff_core::Delivery {
                    retries: Some(1),
                    backoff_policy: Some("exponential".into()),
                    backoff_delay_ms: Some(1),
                    timeout_ms: Some(1),
                    dead_letter: Some("store".into()),
                    max_in_flight: Some(1),
                    max_per_second: Some(1),
                    max_age_ms: Some(1),
                },
                readiness_probe: Some(probe_patch.clone()),
                liveness_probe: Some(probe_patch),
                autoscaling: autoscaling(),
            },
            no_traffic: true,
            tag: Some("t".into()),
        },
    );
    check(
        "TrafficRequest",
        &TrafficRequest {
            traffic: vec![target()],
        },
    );
    check(
        "RollbackRequest",
        &RollbackRequest {
            revision: Some("hello-00001".into()),
        },
    );
    check(
        "SecretWrite",
        &SecretWrite {
            data: [("k".to_owned(), SecretValue("dg==".into()))].into(),
            string_data: [("t".to_owned(), SecretValue("v".into()))].into(),
            services: vec!["s".into()],
        },
    );
    check(
        "TokenRequest",
        &TokenRequest {
            name: "n".into(),
            role: "viewer".into(),
            services: vec!["s".into()],
        },
    );
    check(
        "ConfigMapWrite",
        &ConfigMapWrite {
            data: [("k".to_owned(), "v".to_owned())].into(),
        },
    );
    check(
        "SecretVersionPatch",
        &SecretVersionPatch {
            state: "disabled".into(),
        },
    );
}

#[test]
fn answers_match_the_openapi_document() {
    check(
        "SecretDetail",
        &SecretDetail {
            name: "n".into(),
            created_at: 1,
            services: vec!["s".into()],
            versions: vec![SecretVersionInfo {
                version: 1,
                state: "enabled".into(),
                keys: vec!["k".into()],
                created_at: 1,
            }],
        },
    );
    check(
        "TokenCreated",
        &TokenCreated {
            name: "n".into(),
            role: "r".into(),
            services: vec!["s".into()],
            token: "t".into(),
        },
    );
    check(
        "TokenInfo",
        &TokenInfo {
            name: "n".into(),
            role: "r".into(),
            services: vec!["s".into()],
            created_at: 1,
            revoked_at: Some(2),
        },
    );
    check(
        "AuditEntry",
        &AuditEntry {
            at: 1,
            who: "w".into(),
            action: "a".into(),
            result: "r".into(),
        },
    );
    check(
        "ConfigMapDetail",
        &ConfigMapDetail {
            name: "n".into(),
            data: [("k".to_owned(), "v".to_owned())].into(),
            created_at: 1,
            updated_at: 1,
        },
    );
    check(
        "InvocationInfo",
        &skiff_control::documents::InvocationInfo {
            id: "inv-1".into(),
            service: "s".into(),
            state: "pending".into(),
            method: "POST".into(),
            target: "/".into(),
            attempts: 1,
            created_ms: 1,
            next_ms: Some(2),
            finished_ms: Some(3),
            last_status: Some(503),
            last_error: Some("e".into()),
            idempotency_key: Some("k".into()),
            origin: Some("schedule/s".into()),
            event_type: Some("t".into()),
            event_id: Some("i".into()),
        },
    );
    let delivery = skiff_core::Delivery {
        retries: Some(1),
        backoff_policy: Some("linear".into()),
        backoff_delay_ms: Some(1),
        timeout_ms: Some(1),
        dead_letter: Some("store".into()),
        max_in_flight: Some(1),
        max_per_second: Some(1),
        max_age_ms: Some(1),
    };
    let counts = || {
        Some(InvocationCounts {
            pending: 1,
            delivering: 1,
            delivered: 1,
            dead: 1,
            oldest_open_ms: Some(1),
        })
    };
    check(
        "ScheduleDetail",
        &ScheduleDetail {
            name: "n".into(),
            spec: skiff_core::ScheduleSpec {
                cron: "* * * * *".into(),
                timezone: "UTC".into(),
                to: "s".into(),
                path: "/p".into(),
                data: Some("d".into()),
                content_type: Some("text/plain".into()),
                format: skiff_core::EventFormat::Structured,
                delivery: delivery.clone(),
            },
            created_ms: 1,
            last_run_ms: Some(1),
            next_run_ms: Some(2),
            deliveries: counts(),
        },
    );
    check(
        "SubscriptionDetail",
        &SubscriptionDetail {
            name: "n".into(),
            spec: skiff_core::SubscriptionSpec {
                topic: "t".into(),
                to: "s".into(),
                path: "/p".into(),
                filters: vec![skiff_core::Filter {
                    attribute: "type".into(),
                    op: skiff_core::FilterOp::Prefix,
                    value: "v".into(),
                }],
                format: skiff_core::EventFormat::Binary,
                delivery,
            },
            created_ms: 1,
            deliveries: counts(),
        },
    );
    check(
        "TopicDetail",
        &TopicDetail {
            name: "t".into(),
            created_ms: 1,
            subscriptions: vec!["s".into()],
        },
    );
    check(
        "Published",
        &Published {
            topic: "t".into(),
            id: "e".into(),
            deliveries: vec![PublishedDelivery {
                subscription: "s".into(),
                service: "v".into(),
                invocation: "inv-1".into(),
                duplicate: true,
            }],
        },
    );
    check(
        "SecretSummary",
        &SecretSummary {
            name: "n".into(),
            created_at: 1,
            services: vec!["s".into()],
            versions: 1,
            latest: Some(1),
            keys: vec!["k".into()],
        },
    );
    check(
        "Deployed",
        &Deployed {
            service: "s".into(),
            revision: "r".into(),
            image_digest: "d".into(),
            url: "u".into(),
            percent: 1,
            tag_url: Some("t".into()),
        },
    );
    check(
        "ServiceSummary",
        &ServiceSummary {
            name: "n".into(),
            url: "u".into(),
            serving_revision: Some("r".into()),
            latest_revision: Some("r".into()),
            ready_instances: 1,
            in_flight: 1,
            queued: 1,
        },
    );
    check(
        "ServiceDetail",
        &ServiceDetail {
            name: "n".into(),
            url: "u".into(),
            created_at: 1,
            version: 1,
            serving_revision: Some("r".into()),
            traffic: vec![TrafficDetail {
                revision: "r".into(),
                latest: true,
                percent: 1,
                tag: Some("t".into()),
                url: Some("u".into()),
            }],
            revisions: vec![RevisionDetail {
                name: "r".into(),
                generation: 1,
                image_digest: "d".into(),
                created_at: 1,
                percent: 1,
                tags: vec!["t".into()],
                spec: spec(),
                last_failure: Some(failure()),
                autoscaler: Some(AutoscalerDetail {
                    at: 1,
                    desired: 1,
                    ready: 1,
                    metric: "rps".into(),
                    stable_demand: 1.0,
                    panic_demand: 1.0,
                    panicking: true,
                    reason: "r".into(),
                }),
            }],
            instances: vec![InstanceDetail {
                id: "i".into(),
                revision: "r".into(),
                state: "ready".into(),
                started_at: 1,
                finished_at: Some(1),
                exit: Some("e".into()),
                oom_kills: Some(1),
            }],
            last_failure: Some(failure()),
            invocations: Some(skiff_control::documents::InvocationCounts {
                pending: 1,
                delivering: 1,
                delivered: 1,
                dead: 1,
                oldest_open_ms: Some(1),
            }),
            triggers: ServiceTriggers {
                schedules: vec!["s".into()],
                subscriptions: vec!["t".into()],
            },
        },
    );
    check(
        "LogLine",
        &LogLine {
            time: "t".into(),
            instance: "i".into(),
            stream: "stdout".into(),
            message: "m".into(),
        },
    );
    check(
        "ErrorBody",
        &ErrorBody {
            error: ErrorDetail {
                kind: "conflict".into(),
                message: "m".into(),
                field: Some("f".into()),
                log_tail: Some("t".into()),
            },
        },
    );
}

#[test]
fn a_field_the_document_lacks_is_named() {
    let doc = openapi();
    let mut out = Vec::new();
    let schema = json!({ "$ref": "#/components/schemas/RollbackRequest" });
    drift(
        &doc,
        &schema,
        &json!({"revision": "r", "force": true}),
        "RollbackRequest",
        &mut out,
    );
    assert_eq!(out, ["RollbackRequest.force: not in docs/openapi.yaml"]);
}
