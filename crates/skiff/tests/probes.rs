//! End-to-end: readiness and liveness probes of serving instances, against the hello
//! example's `/healthz` (which `/sick` makes fail).

mod daemon;

use daemon::{eventually, Daemon};
use std::time::Duration;

/// The instance id in hello's `hello from ID` answer.
fn instance_of(answer: &str) -> String {
    answer
        .split_whitespace()
        .last()
        .unwrap_or_else(|| panic!("no instance id in {answer:?}"))
        .to_owned()
}

fn state_of(d: &Daemon, service: &str, id: &str) -> String {
    let detail = d.json(&["describe", service]);
    detail["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .map(|i| i["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn a_failing_liveness_probe_restarts_the_instance_and_describe_says_why() {
    let d = Daemon::start(&[]);
    d.deploy_hello(
        "live",
        &[
            "--min-instances",
            "1",
            "--liveness-probe",
            "/healthz",
            "--liveness-period",
            "300ms",
            "--liveness-failures",
            "2",
        ],
    );
    let first = instance_of(&d.get("live", "/").text());
    // Healthy: a few periods pass and the same instance keeps answering.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(instance_of(&d.get("live", "/").text()), first);
    assert_eq!(d.get("live", "/sick").status, 200);
    eventually(Duration::from_secs(15), "a new instance answering", || {
        let r = d.get("live", "/");
        r.status == 200 && instance_of(&r.text()) != first
    });
    let detail = d.json(&["describe", "live"]);
    let reason = detail["last_failure"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains(&first)
            && reason.contains(
                "liveness probe (GET /healthz failed 2 times in a row, last: status 503)"
            ),
        "{detail}"
    );
    // Its replacement may serve before it has finished stopping.
    let old_instance = || {
        d.json(&["describe", "live"])["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == first.as_str())
            .expect("the restarted instance is listed")
            .clone()
    };
    eventually(Duration::from_secs(15), "the old instance exited", || {
        old_instance()["state"] == "exited"
    });
    let old = old_instance();
    assert_eq!(
        old["exit"], "exited with code 0",
        "stopped gracefully: {old}"
    );
}

#[test]
fn a_failing_readiness_probe_takes_the_instance_out_of_rotation_until_it_passes() {
    let d = Daemon::start(&[]);
    // Two instances kept, so the recovered one is not the scaler's surplus.
    d.deploy_hello(
        "ready",
        &[
            "--min-instances",
            "2",
            "--readiness-probe",
            "/healthz",
            "--readiness-period",
            "200ms",
            "--readiness-failures",
            "1",
        ],
    );
    eventually(Duration::from_secs(10), "two ready instances", || {
        d.ready("ready") == 2
    });
    // Sick for 4 s: out of the rotation, then back.
    let sick = d.get("ready", "/sick?ms=4000").text();
    let sick = instance_of(&sick);
    eventually(
        Duration::from_secs(3),
        "the instance marked unready",
        || state_of(&d, "ready", &sick) == "unready",
    );
    // Only the healthy instance serves meanwhile.
    for _ in 0..10 {
        let r = d.get("ready", "/");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_ne!(
            instance_of(&r.text()),
            sick,
            "served by the unready instance"
        );
    }
    eventually(
        Duration::from_secs(8),
        "the instance back in rotation",
        || state_of(&d, "ready", &sick) == "ready",
    );
    // It was kept, not restarted: a readiness failure is not a liveness failure.
    let detail = d.json(&["describe", "ready"]);
    assert!(detail["last_failure"].is_null(), "{detail}");
}

#[test]
fn readiness_holds_no_connection_open_while_the_startup_probe_runs() {
    let d = Daemon::start(&[]);
    // The app fails its probe for 300 ms, as a slow warm-up does, so probing goes on
    // for a while after the port first accepted.
    d.deploy_hello(
        "quiet",
        &["--startup-probe", "/healthz", "--", "--sick-for", "300"],
    );
    let seen = d.get("quiet", "/connections").text();
    // When the probe passed, its own connection was the only one open: the one that
    // proved the port listens was closed at once, not held until the first request (a
    // one-at-a-time server such as gunicorn's sync worker would block on it).
    assert!(
        seen.ends_with(", open during the first passing probe 1\n"),
        "{seen}"
    );
}

#[test]
fn an_exec_liveness_probe_runs_inside_and_restarts_the_instance_when_it_fails() {
    let d = Daemon::start(&[]);
    d.deploy_hello(
        "execlive",
        &[
            "--min-instances",
            "1",
            "--liveness-probe",
            "exec:/hello --check /healthz",
            "--liveness-period",
            "300ms",
            "--liveness-failures",
            "2",
        ],
    );
    let first = instance_of(&d.get("execlive", "/").text());
    // Passing: a few periods and the same instance answers.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(instance_of(&d.get("execlive", "/").text()), first);
    assert_eq!(d.get("execlive", "/sick").status, 200);
    eventually(Duration::from_secs(15), "a new instance answering", || {
        let r = d.get("execlive", "/");
        r.status == 200 && instance_of(&r.text()) != first
    });
    let detail = d.json(&["describe", "execlive"]);
    let reason = detail["last_failure"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains(
            "exec /hello --check /healthz failed 2 times in a row, last: exited with code 1"
        ),
        "{detail}"
    );
    let spec = &detail["revisions"][0]["spec"]["liveness_probe"];
    assert_eq!(
        spec["exec"],
        serde_json::json!(["/hello", "--check", "/healthz"])
    );
}

#[test]
fn an_exec_probe_without_the_init_is_refused_by_name() {
    let d = Daemon::start(&[]);
    let out = d.cli(&[
        "deploy",
        "noinit",
        "--image",
        "hello",
        "--no-init",
        "--readiness-probe",
        "exec:/hello --check /",
    ]);
    assert!(!out.status.success());
    assert!(
        daemon::stderr(&out).contains("exec probes run through skiff's init"),
        "{}",
        daemon::stderr(&out)
    );
}
