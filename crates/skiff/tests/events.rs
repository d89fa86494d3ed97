//! Event triggers end to end (issue 19, items 3 to 5): a schedule every second delivers
//! CloudEvents to a service scaled to zero; a topic with two filtered subscriptions
//! delivers each published event only where its filters match, in binary or structured
//! mode; `skiff events` lists them and `describe` names a service's triggers.

mod daemon;

use daemon::{eventually, Daemon};
use std::time::Duration;

/// The `recorded …` lines `hello /record` printed for `service`.
fn recorded(d: &Daemon, service: &str) -> Vec<String> {
    d.ok(&["logs", service])
        .lines()
        .filter_map(|l| l.find("recorded ").map(|at| l[at..].to_owned()))
        .collect()
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let at = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    let rest = &line[at + name.len() + 2..];
    if name == "body" {
        return rest;
    }
    rest.split(' ').next().unwrap()
}

#[test]
fn a_schedule_every_second_delivers_cloudevents_to_a_service_scaled_to_zero() {
    let d = Daemon::start(&[]);
    d.deploy_hello("ticker", &["--initial-instances", "0"]);
    assert_eq!(d.ready("ticker"), 0);
    // Refused by name: a bad pattern, a bad zone, a service that is not there.
    let bad = d.cli(&[
        "schedule",
        "create",
        "bad",
        "--cron",
        "61 * * * *",
        "--to",
        "ticker",
    ]);
    assert!(!bad.status.success());
    assert!(
        daemon::stderr(&bad).contains("cron"),
        "{}",
        daemon::stderr(&bad)
    );
    let bad = d.cli(&[
        "schedule",
        "create",
        "bad",
        "--cron",
        "* * * * *",
        "--timezone",
        "Mars/Olympus",
        "--to",
        "ticker",
    ]);
    assert!(
        daemon::stderr(&bad).contains("Mars/Olympus"),
        "{}",
        daemon::stderr(&bad)
    );
    let bad = d.cli(&[
        "schedule",
        "create",
        "bad",
        "--cron",
        "* * * * *",
        "--to",
        "nobody",
    ]);
    assert!(
        daemon::stderr(&bad).contains("nobody"),
        "{}",
        daemon::stderr(&bad)
    );
    assert!(d.json(&["schedule", "ls"]).as_array().unwrap().is_empty());

    d.ok(&[
        "schedule",
        "create",
        "every-second",
        "--cron",
        "* * * * * *",
        "--timezone",
        "Europe/Paris",
        "--to",
        "ticker",
        "--path",
        "/record",
        "--data",
        r#"{"n":1}"#,
        "--content-type",
        "application/json",
    ]);
    eventually(
        Duration::from_secs(30),
        "three scheduled runs delivered",
        || recorded(&d, "ticker").len() >= 3,
    );
    let lines = recorded(&d, "ticker");
    let mut ids = std::collections::HashSet::new();
    let mut times = Vec::new();
    for line in &lines {
        assert_eq!(field(line, "type"), "dev.knative.sources.ping", "{line}");
        assert_eq!(
            field(line, "source"),
            "/skiff/schedules/every-second",
            "{line}"
        );
        assert_eq!(field(line, "content-type"), "application/json", "{line}");
        assert_eq!(field(line, "body"), r#"{"n":1}"#, "{line}");
        assert!(
            ids.insert(field(line, "id").to_owned()),
            "an id twice: {lines:?}"
        );
        times.push(field(line, "time").to_owned());
    }
    // Each run is stamped with its own second, whole.
    let mut distinct = times.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), times.len(), "{times:?}");
    assert!(
        times
            .iter()
            .all(|t| (t.ends_with('Z') || t.ends_with("+00:00")) && !t.contains('.')),
        "{times:?}"
    );

    let s = d.json(&["schedule", "describe", "every-second"]);
    assert_eq!(s["spec"]["timezone"], "Europe/Paris", "{s}");
    assert!(
        s["next_run_ms"].as_i64().unwrap() > s["last_run_ms"].as_i64().unwrap(),
        "{s}"
    );
    assert!(s["deliveries"]["delivered"].as_u64().unwrap() >= 3, "{s}");
    let events = d.json(&["events", "ls", "--origin", "schedule/every-second"]);
    let first = &events.as_array().unwrap()[0];
    assert_eq!(first["event_type"], "dev.knative.sources.ping", "{first}");
    assert_eq!(first["service"], "ticker");
    let described = d.ok(&["describe", "ticker"]);
    assert!(described.contains("schedule/every-second"), "{described}");

    // Removed: no more runs.
    d.ok(&["schedule", "rm", "every-second"]);
    let made = d
        .json(&[
            "events",
            "ls",
            "--origin",
            "schedule/every-second",
            "--limit",
            "1000",
        ])
        .as_array()
        .unwrap()
        .len();
    std::thread::sleep(Duration::from_millis(2500));
    let later = d
        .json(&[
            "events",
            "ls",
            "--origin",
            "schedule/every-second",
            "--limit",
            "1000",
        ])
        .as_array()
        .unwrap()
        .len();
    assert_eq!(made, later, "runs after the schedule was removed");
}

#[test]
fn a_topic_delivers_each_event_only_where_a_subscriptions_filters_match() {
    let d = Daemon::start(&[]);
    d.deploy_hello("billing", &[]);
    d.deploy_hello("audit", &["--initial-instances", "0"]);
    d.ok(&["topic", "create", "orders"]);
    // A subscription to a topic that is not there is refused by name.
    let bad = d.cli(&["topic", "subscribe", "nope", "--to", "billing"]);
    assert!(
        daemon::stderr(&bad).contains("nope"),
        "{}",
        daemon::stderr(&bad)
    );
    d.ok(&[
        "topic",
        "subscribe",
        "orders",
        "--to",
        "billing",
        "--path",
        "/record",
        "--filter",
        "type=com.example.order.paid",
    ]);
    d.ok(&[
        "topic",
        "subscribe",
        "orders",
        "--to",
        "audit",
        "--path",
        "/record",
        "--filter-prefix",
        "source=/shop/eu",
        "--format",
        "structured",
    ]);
    let publish = |ty: &str, source: &str, id: &str| {
        d.json(&[
            "publish",
            "orders",
            "--type",
            ty,
            "--source",
            source,
            "--id",
            id,
            "--data",
            &format!(r#"{{"order":"{id}"}}"#),
        ])
    };
    // Paid in the EU: both. Paid in the US: billing. Created in the EU: audit. Created
    // in the US: neither.
    let both = publish("com.example.order.paid", "/shop/eu/1", "e1");
    assert_eq!(both["deliveries"].as_array().unwrap().len(), 2, "{both}");
    publish("com.example.order.paid", "/shop/us/1", "e2");
    publish("com.example.order.created", "/shop/eu/2", "e3");
    let none = publish("com.example.order.created", "/shop/us/2", "e4");
    assert!(none["deliveries"].as_array().unwrap().is_empty(), "{none}");
    // The same event again (same source and id): no second delivery.
    let again = publish("com.example.order.paid", "/shop/eu/1", "e1");
    assert!(
        again["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["duplicate"] == true),
        "{again}"
    );

    eventually(
        Duration::from_secs(30),
        "billing's two and audit's two",
        || recorded(&d, "billing").len() >= 2 && recorded(&d, "audit").len() >= 2,
    );
    // Past the last delivery, nothing else arrives.
    eventually(Duration::from_secs(10), "all deliveries settled", || {
        let subs = d.json(&["topic", "subscriptions"]);
        subs.as_array().unwrap().iter().all(|s| {
            let c = &s["deliveries"];
            c["pending"] == 0 && c["delivering"] == 0 && c["delivered"] == 2
        })
    });
    let billing = recorded(&d, "billing");
    let mut billed: Vec<&str> = billing.iter().map(|l| field(l, "id")).collect();
    billed.sort();
    assert_eq!(billed, ["e1", "e2"], "{billing:?}");
    for line in &billing {
        // Binary mode: attributes as fields, the data as the body.
        assert_eq!(field(line, "type"), "com.example.order.paid", "{line}");
        assert_eq!(field(line, "content-type"), "application/json", "{line}");
    }
    let audit = recorded(&d, "audit");
    assert_eq!(audit.len(), 2, "{audit:?}");
    for line in &audit {
        // Structured mode: the whole event as JSON.
        assert_eq!(field(line, "type"), "-", "{line}");
        assert_eq!(
            field(line, "content-type"),
            "application/cloudevents+json",
            "{line}"
        );
        let event: serde_json::Value = serde_json::from_str(field(line, "body")).unwrap();
        assert!(
            event["source"].as_str().unwrap().starts_with("/shop/eu"),
            "{event}"
        );
        assert_eq!(event["specversion"], "1.0");
        assert!(matches!(event["id"].as_str(), Some("e1" | "e3")), "{event}");
    }
    let described = d.ok(&["describe", "billing"]);
    assert!(
        described.contains("subscription/orders-billing"),
        "{described}"
    );

    // A malformed event is refused with what is missing; nothing is delivered.
    let raw = d.api(
        "POST",
        "/v1/topics/orders/events",
        "ce-specversion: 1.0\r\nce-id: x\r\n",
        "",
    );
    assert!(raw.contains("400") && raw.contains("CloudEvents"), "{raw}");
    // Removing the topic removes its subscriptions.
    d.ok(&["topic", "rm", "orders"]);
    assert!(d
        .json(&["topic", "subscriptions"])
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn knative_pingsource_broker_and_trigger_apply_and_deliver() {
    let d = Daemon::start(&[]);
    let yaml = d.home.path().join("eventing.yaml");
    std::fs::write(
        &yaml,
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: shop}
spec:
  template:
    spec:
      containers: [{image: hello}]
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: heartbeat}
spec:
  schedule: "* * * * * *"
  contentType: application/json
  data: '{"beat": true}'
  sink:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: shop}
    uri: /record
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: paid}
spec:
  broker: orders
  filters:
    - exact: {type: com.example.order.paid}
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: shop}
    uri: /record
  delivery: {retry: 2, backoffDelay: PT0.1S}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: orders}
"#,
    )
    .unwrap();
    let out = d.ok(&["apply", "-f", yaml.to_str().unwrap()]);
    for line in [
        "topic orders: applied",
        "schedule heartbeat: applied",
        "subscription paid: applied",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let sub = &d.json(&["topic", "subscriptions"])[0];
    assert_eq!(sub["spec"]["delivery"]["retries"], 2, "{sub}");
    assert_eq!(sub["spec"]["delivery"]["backoff_delay_ms"], 100, "{sub}");
    // Applied again: nothing changes.
    let again = d.ok(&["apply", "-f", yaml.to_str().unwrap()]);
    assert!(
        again.contains("schedule heartbeat: unchanged")
            && again.contains("subscription paid: unchanged")
            && again.contains("topic orders: unchanged"),
        "{again}"
    );
    d.ok(&[
        "publish",
        "orders",
        "--type",
        "com.example.order.paid",
        "--source",
        "/shop",
        "--id",
        "k1",
    ]);
    d.ok(&[
        "publish",
        "orders",
        "--type",
        "com.example.order.created",
        "--source",
        "/shop",
        "--id",
        "k2",
    ]);
    eventually(
        Duration::from_secs(30),
        "a heartbeat and the paid order",
        || {
            let lines = recorded(&d, "shop");
            lines
                .iter()
                .any(|l| field(l, "type") == "dev.knative.sources.ping")
                && lines.iter().any(|l| field(l, "id") == "k1")
        },
    );
    assert!(
        !recorded(&d, "shop").iter().any(|l| field(l, "id") == "k2"),
        "the filter let through an event it does not match"
    );
    // The sample applies beside the hello sample.
    let sample = |name: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/knative")
            .join(name)
            .to_str()
            .unwrap()
            .to_owned()
    };
    d.ok(&["apply", "-f", &sample("hello.yaml")]);
    let out = d.ok(&["apply", "-f", &sample("events.yaml")]);
    assert!(out.contains("subscription paid-orders: applied"), "{out}");
    // What skiff cannot honour is refused by field, before anything is applied.
    std::fs::write(
        &yaml,
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec:\n  broker: orders\n  subscriber: {uri: 'http://example.com/'}\n",
    )
    .unwrap();
    let bad = d.cli(&["apply", "-f", yaml.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(
        daemon::stderr(&bad).contains("spec.subscriber.uri"),
        "{}",
        daemon::stderr(&bad)
    );
}

#[test]
fn a_dead_delivery_goes_to_the_dead_letter_service_with_why() {
    let d = Daemon::start(&[]);
    d.deploy_hello("dlq", &["--initial-instances", "0"]);
    d.deploy_hello("shop", &[]);
    d.ok(&["topic", "create", "orders"]);
    // A subscription whose path the app does not serve: every delivery is a 404, dead
    // at once, and copied to the dead-letter service's /record.
    d.ok(&[
        "topic",
        "subscribe",
        "orders",
        "--to",
        "shop",
        "--path",
        "/no-such-path",
        "--dead-letter",
        "dlq/record",
    ]);
    let bad = d.cli(&[
        "topic",
        "subscribe",
        "orders",
        "--to",
        "shop",
        "--name",
        "x",
        "--dead-letter",
        "nobody",
    ]);
    assert!(
        daemon::stderr(&bad).contains("nobody"),
        "{}",
        daemon::stderr(&bad)
    );
    d.ok(&[
        "publish",
        "orders",
        "--type",
        "t",
        "--source",
        "/s",
        "--id",
        "doomed",
        "--data",
        r#"{"n":1}"#,
    ]);
    eventually(Duration::from_secs(30), "the dead letter", || {
        !recorded(&d, "dlq").is_empty()
    });
    let line = &recorded(&d, "dlq")[0];
    assert_eq!(field(line, "id"), "doomed", "{line}");
    assert_eq!(field(line, "error-code"), "404", "{line}");
    assert!(field(line, "dead-letter").contains("404"), "{line}");
    assert_eq!(field(line, "body"), r#"{"n":1}"#, "{line}");
    // The original stays dead in the store (the DLQ), the copy is delivered.
    let dlq = d.json(&["events", "dlq"]);
    assert!(
        dlq.as_array()
            .unwrap()
            .iter()
            .any(|e| e["event_id"] == "doomed" && e["service"] == "shop"),
        "{dlq}"
    );
    let copies = d.json(&["events", "ls", "--service", "dlq"]);
    let copy = &copies[0];
    assert_eq!(copy["state"], "delivered", "{copy}");
    assert!(
        copy["origin"]
            .as_str()
            .unwrap()
            .starts_with("deadletter/inv-"),
        "{copy}"
    );
}

#[test]
fn an_async_invocation_is_delivered_as_a_cloudevent_skiff_originates() {
    let d = Daemon::start(&[]);
    d.deploy_hello("jobs", &[]);
    let r = daemon::http(
        d.port,
        "jobs.localhost",
        "POST",
        "/record",
        &[
            ("prefer", "respond-async"),
            ("content-type", "application/json"),
        ],
        br#"{"job":1}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("x-skiff-invocation-id").unwrap().to_owned();
    eventually(Duration::from_secs(30), "the delivery", || {
        !recorded(&d, "jobs").is_empty()
    });
    let line = &recorded(&d, "jobs")[0];
    assert_eq!(field(line, "type"), "dev.skiff.invocation", "{line}");
    assert_eq!(field(line, "id"), id, "{line}");
    assert_eq!(field(line, "source"), "/skiff/services/jobs", "{line}");
    assert!(field(line, "time").ends_with('Z'), "{line}");
    assert_eq!(field(line, "content-type"), "application/json", "{line}");
    assert_eq!(field(line, "body"), r#"{"job":1}"#, "{line}");
}

#[test]
fn events_taken_on_a_kept_connection_get_their_own_time_to_arrive() {
    use std::io::Write;
    let d = Daemon::start(&[]);
    d.deploy_hello("jobs", &["--timeout", "1s"]);
    d.ok(&["topic", "create", "orders"]);
    let token = d.token("shop", "invoker", &[]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // A call (whose timeout is 1 s), then, once that has passed, a request the router
    // takes itself, whose body comes a moment after its head (a client writing them
    // apart): the call's timeout no longer bounds it.
    let mut after_a_call = |head: String, body: &[u8]| {
        s.write_all(b"GET / HTTP/1.1\r\nhost: jobs.localhost\r\n\r\n")
            .unwrap();
        assert_eq!(daemon::read_one_response(&mut s).status, 200);
        std::thread::sleep(Duration::from_millis(1500));
        s.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(body).unwrap();
        daemon::read_one_response(&mut s)
    };
    let body = br#"{"job":2}"#;
    let invocation = format!(
        "POST /record HTTP/1.1\r\nhost: jobs.localhost\r\nprefer: respond-async\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let r = after_a_call(invocation, body);
    assert_eq!(r.status, 202, "an asynchronous invocation: {}", r.text());
    let event = format!(
        "POST / HTTP/1.1\r\nhost: orders.topics.skiff.internal\r\n\
         authorization: Bearer {token}\r\nce-specversion: 1.0\r\nce-id: e1\r\n\
         ce-source: /shop\r\nce-type: order.paid\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let r = after_a_call(event, body);
    assert_eq!(r.status, 202, "an event for a topic: {}", r.text());
    eventually(Duration::from_secs(30), "the invocation's delivery", || {
        recorded(&d, "jobs")
            .iter()
            .any(|l| field(l, "body") == r#"{"job":2}"#)
    });
}
