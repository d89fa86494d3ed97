//! Async invocations end to end (issue 19, item 1): a request with `Prefer:
//! respond-async` is answered 202 at once with its id, kept in the store, and delivered
//! through the router (waking a service from zero); an Idempotency-Key deduplicates; a
//! target that refuses it (a 4xx) puts it in the dead-letter state with the reason; a
//! private service gets the invocations its callers were allowed to make.

mod daemon;

use daemon::{http, Daemon, Response};
use std::time::{Duration, Instant};

fn send_async(
    d: &Daemon,
    service: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut headers = vec![("prefer", "respond-async")];
    headers.extend_from_slice(extra);
    http(
        d.port,
        &format!("{service}.localhost"),
        "POST",
        path,
        &headers,
        body,
    )
}

/// The invocation `id` of `service` once it is no longer pending or delivering.
fn settled(d: &Daemon, service: &str, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = d.json(&["invocations", service]);
        let found = list
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no invocation {id} in {list}"));
        if found["state"] == "delivered" || found["state"] == "dead" {
            return found;
        }
        assert!(Instant::now() < deadline, "{id} never settled: {found}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn accepted_id(r: &Response) -> String {
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("x-skiff-invocation-id").expect("an id").to_owned();
    assert!(id.starts_with("inv-"), "{id}");
    id
}

#[test]
fn async_invocations_are_kept_answered_at_once_and_delivered() {
    let d = Daemon::start(&[]);
    d.deploy_hello("hello", &["--initial-instances", "0"]);
    let r = send_async(&d, "hello", "/echo", &[], b"job-1");
    let id = accepted_id(&r);
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/services/hello/invocations/{id}").as_str())
    );
    // Delivered through the router, which woke the service from zero for it.
    let done = settled(&d, "hello", &id);
    assert_eq!(done["state"], "delivered", "{done}");
    assert_eq!(
        (done["last_status"].as_u64(), done["attempts"].as_u64()),
        (Some(200), Some(1))
    );
    assert_eq!(done["method"], "POST");

    // The same key twice: one invocation.
    let key = [("idempotency-key", "order-17")];
    let first = accepted_id(&send_async(&d, "hello", "/echo", &key, b"a"));
    let again = accepted_id(&send_async(&d, "hello", "/echo", &key, b"a"));
    assert_eq!(first, again);
    let list = d.json(&["invocations", "hello"]);
    let keyed = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["idempotency_key"] == "order-17")
        .count();
    assert_eq!(keyed, 1, "{list}");

    // A target that refuses it: not retried, dead with the reason.
    let id = accepted_id(&send_async(&d, "hello", "/no-such-path", &[], b""));
    let dead = settled(&d, "hello", &id);
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(
        (dead["last_status"].as_u64(), dead["attempts"].as_u64()),
        (Some(404), Some(1))
    );
    assert!(
        dead["last_error"].as_str().unwrap().contains("status 404"),
        "{dead}"
    );
    // The API shows one by its id; the table names it too.
    let one = d.json(&["invocations", "hello", "--limit", "100"]);
    assert!(one.as_array().unwrap().iter().any(|i| i["id"] == id));
    let table = d.ok(&["invocations", "hello"]);
    assert!(table.contains(&id) && table.contains("DEAD"), "{table}");
}

#[test]
fn a_private_service_gets_the_async_invocations_its_callers_may_make() {
    let d = Daemon::start(&[]);
    d.deploy_hello("db", &["--no-allow-unauthenticated"]);
    // Not let in: not kept either.
    let r = send_async(&d, "db", "/echo", &[], b"x");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(d
        .json(&["invocations", "db"])
        .as_array()
        .unwrap()
        .is_empty());
    let token = d.ok(&[
        "token",
        "create",
        "ci",
        "--role",
        "invoker",
        "--service",
        "db",
    ]);
    let auth = format!("Bearer {}", token.trim());
    let id = accepted_id(&send_async(
        &d,
        "db",
        "/echo",
        &[("authorization", &auth)],
        b"x",
    ));
    // Delivered by the daemon, whose own claim gets it past the gate.
    let done = settled(&d, "db", &id);
    assert_eq!(done["state"], "delivered", "{done}");
    assert_eq!(done["last_status"].as_u64(), Some(200));
}
