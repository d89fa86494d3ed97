//! Async invocations end to end (issue 19, item 1): a request with `Prefer:
//! respond-async` is answered 202 at once with its id, kept in the store, and delivered
//! through the router (waking a service from zero); an Idempotency-Key deduplicates; a
//! target that refuses it (a 4xx) puts it in the dead-letter state with the reason; a
//! private service gets the invocations its callers were allowed to make.

mod daemon;

use daemon::{cpu_ticks, http, Daemon, Response};
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

/// Every invocation of `service` by id, once none is pending or delivering.
fn all_settled(d: &Daemon, service: &str, limit: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let list = d.json(&["invocations", service, "--limit", "1000"]);
        let all = list.as_array().unwrap().clone();
        let open = all
            .iter()
            .filter(|i| i["state"] == "pending" || i["state"] == "delivering")
            .count();
        if open == 0 {
            return all;
        }
        assert!(Instant::now() < deadline, "{open} still open");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many invocations of `service` have settled, and how many are being delivered.
fn counts(d: &Daemon, service: &str) -> (usize, usize) {
    let list = d.json(&["invocations", service, "--limit", "1000"]);
    let all = list.as_array().unwrap();
    let count = |states: &[&str]| {
        all.iter()
            .filter(|i| states.iter().any(|s| i["state"] == *s))
            .count()
    };
    (count(&["delivered", "dead"]), count(&["delivering"]))
}

#[test]
fn no_invocation_is_lost_when_the_daemon_is_killed_twice_while_delivering() {
    const N: usize = 1000;
    let mut d = Daemon::start(&[]);
    d.deploy_hello("flaky", &[]);
    let ids: std::collections::HashSet<String> = (0..N)
        .map(|i| {
            let body = i.to_string();
            // Each attempt takes 100 ms: a kill finds deliveries under way.
            let path = "/flaky?percent=30&ms=100";
            accepted_id(&send_async(&d, "flaky", path, &[], body.as_bytes()))
        })
        .collect();
    assert_eq!(ids.len(), N, "ids repeated");
    // Killed twice with deliveries under way: once some have settled, again after more.
    for _ in 0..2 {
        let (before, _) = counts(&d, "flaky");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (settled, delivering) = counts(&d, "flaky");
            assert!(
                settled < N,
                "all settled before the kill: it proves nothing"
            );
            if settled > before && delivering > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "no delivery progressed");
            std::thread::sleep(Duration::from_millis(20));
        }
        d.kill9();
        d.launch();
    }
    let all = all_settled(&d, "flaky", Duration::from_secs(120));
    let found: std::collections::HashSet<String> = all
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(found, ids, "invocations lost or made up");
    let dead: Vec<&serde_json::Value> = all.iter().filter(|i| i["state"] == "dead").collect();
    for i in &dead {
        // Dead only after every retry, each failing on purpose.
        assert!(i["attempts"].as_u64().unwrap() >= 4, "{i}");
        assert_eq!(i["last_status"].as_u64(), Some(500), "{i}");
    }
    // 30 % failing four times in a row: under 1 % expected; far fewer than all.
    assert!(dead.len() < N / 20, "{} of {N} dead", dead.len());
    let retried = all
        .iter()
        .filter(|i| i["state"] == "delivered" && i["attempts"].as_u64() > Some(1))
        .count();
    assert!(
        retried > 0,
        "no invocation was retried: the test proves nothing"
    );
}

#[test]
fn a_services_delivery_settings_decide_its_retries() {
    let d = Daemon::start(&[]);
    d.deploy_hello("once", &["--retries", "0"]);
    d.deploy_hello(
        "thrice",
        &[
            "--retries",
            "2",
            "--backoff-delay",
            "PT0.05S",
            "--backoff-policy",
            "linear",
        ],
    );
    let spec = &d.json(&["describe", "thrice"])["revisions"][0]["spec"];
    assert_eq!(spec["delivery"]["backoff_delay_ms"], 50, "{spec}");
    for (service, attempts) in [("once", 1), ("thrice", 3)] {
        let id = accepted_id(&send_async(&d, service, "/flaky?percent=100", &[], b""));
        let dead = settled(&d, service, &id);
        assert_eq!(dead["state"], "dead", "{dead}");
        assert_eq!(
            dead["attempts"].as_u64(),
            Some(attempts),
            "{service}: {dead}"
        );
        assert_eq!(dead["last_status"].as_u64(), Some(500));
    }
    // What is not a setting is refused by name, and changes nothing.
    for (flag, value, says) in [
        ("--backoff-policy", "cubic", "backoff-policy"),
        ("--backoff-delay", "soon", "PT0.5S"),
        ("--dead-letter", "elsewhere", "dead-letter"),
        ("--retries", "1000", "retries"),
    ] {
        let out = d.cli(&["deploy", "once", flag, value]);
        assert!(!out.status.success(), "{flag} {value} taken");
        let err = daemon::stderr(&out);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

#[test]
fn dead_invocations_are_counted_in_describe_and_sent_again_on_redrive() {
    let d = Daemon::start(&[]);
    d.deploy_hello("svc", &["--retries", "0"]);
    let id = accepted_id(&send_async(&d, "svc", "/flaky?percent=100", &[], b""));
    let first = settled(&d, "svc", &id);
    assert_eq!(first["state"], "dead");
    let counts = &d.json(&["describe", "svc"])["invocations"];
    assert_eq!(
        (counts["dead"].as_u64(), counts["delivered"].as_u64()),
        (Some(1), Some(0)),
        "{counts}"
    );
    assert!(d.ok(&["describe", "svc"]).contains("1 dead"));
    // Sent again: it fails again (one attempt, counted afresh), and is dead once more.
    let out = d.ok(&["invocations", "svc", "--redrive", &id]);
    assert!(out.contains(&id), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let again = loop {
        let again = settled(&d, "svc", &id);
        if again["finished_ms"].as_i64() > first["finished_ms"].as_i64() {
            break again;
        }
        assert!(Instant::now() < deadline, "not sent again: {again}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (again["state"].as_str(), again["attempts"].as_u64()),
        (Some("dead"), Some(1)),
        "{again}"
    );
    let redriven = d.json(&["invocations", "svc", "--redrive", "inv-0000000000000000"]);
    assert_eq!(
        redriven["redriven"].as_array().unwrap().len(),
        0,
        "{redriven}"
    );
}

#[test]
fn an_idle_daemon_spends_no_cpu_waiting_for_invocations() {
    let d = Daemon::start(&[]);
    d.deploy_hello("svc", &[]);
    let id = accepted_id(&send_async(&d, "svc", "/echo", &[], b"x"));
    assert_eq!(settled(&d, "svc", &id)["state"], "delivered");
    // Measuring, not waiting: a dispatcher woken by its own claims spun a core here.
    let before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(d.pid()) - before;
    assert!(
        used < 15,
        "the idle daemon used {used} ticks of CPU in a second"
    );
}

/// When each of `ids` was delivered (Unix milliseconds), in order.
fn finish_times(d: &Daemon, service: &str, ids: &[String]) -> Vec<i64> {
    let mut times: Vec<i64> = ids
        .iter()
        .map(|id| {
            let done = settled(d, service, id);
            assert_eq!(done["state"], "delivered", "{done}");
            done["finished_ms"].as_i64().unwrap()
        })
        .collect();
    times.sort();
    times
}

#[test]
fn a_targets_limits_hold_deliveries_to_so_many_at_once_and_so_many_a_second() {
    let d = Daemon::start(&[]);
    // One at a time: five deliveries of 300 ms end at least ~300 ms apart.
    d.deploy_hello("serial", &["--max-in-flight", "1", "--max-instances", "5"]);
    let ids: Vec<String> = (0..5)
        .map(|_| accepted_id(&send_async(&d, "serial", "/sleep?ms=300", &[], b"")))
        .collect();
    let ends = finish_times(&d, "serial", &ids);
    for pair in ends.windows(2) {
        assert!(pair[1] - pair[0] >= 250, "two at once: ends {ends:?}");
    }
    // Five a second after a burst of five: fifteen take two seconds or more.
    d.deploy_hello("paced", &["--max-per-second", "5"]);
    let ids: Vec<String> = (0..15)
        .map(|_| accepted_id(&send_async(&d, "paced", "/", &[], b"")))
        .collect();
    let ends = finish_times(&d, "paced", &ids);
    let span = ends[14] - ends[0];
    assert!(span >= 1700, "fifteen delivered within {span} ms: {ends:?}");
    // None of them counted an attempt for being held back.
    let list = d.json(&["invocations", "paced", "--limit", "100"]);
    assert!(
        list.as_array().unwrap().iter().all(|i| i["attempts"] == 1),
        "{list}"
    );
}
