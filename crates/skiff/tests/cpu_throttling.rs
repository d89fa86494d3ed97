//! End-to-end: CPU only while serving. An instance of a `--cpu-throttling` service is
//! frozen whenever it has no request in flight, runs again for each request and probe,
//! and answers its next request.

mod daemon;

use daemon::{eventually, Daemon};
use std::time::Duration;

fn states(d: &Daemon, service: &str) -> Vec<String> {
    let detail = d.json(&["describe", service]);
    detail["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap().to_owned())
        .collect()
}

fn ticks(d: &Daemon, service: &str) -> u64 {
    let r = d.get(service, "/ticks");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().trim().parse().unwrap()
}

#[test]
fn a_frozen_instance_answers_its_next_request_and_burns_no_cpu_between() {
    let d = Daemon::start(&[]);
    // The liveness probe's 200 ms timeout would fail it if probes reached a frozen app.
    d.deploy_hello(
        "frugal",
        &[
            "--cpu-throttling",
            "--min-instances",
            "1",
            "--liveness-probe",
            "/healthz",
            "--liveness-period",
            "200ms",
        ],
    );
    let first = d.get("frugal", "/").text();
    assert!(first.starts_with("hello from "), "{first}");
    let frozen = || states(&d, "frugal") == ["frozen"];
    eventually(Duration::from_secs(5), "the idle instance frozen", frozen);

    let before = ticks(&d, "frugal");
    eventually(Duration::from_secs(5), "frozen again", frozen);
    // Measuring, not waiting for readiness: a running app would tick ~100 times.
    std::thread::sleep(Duration::from_secs(1));
    let after = ticks(&d, "frugal");
    assert!(
        after - before < 40,
        "the app's 10 ms timer fired {} times in a second while frozen",
        after - before
    );

    assert_eq!(
        d.get("frugal", "/").text(),
        first,
        "the same instance answers"
    );
    let detail = d.json(&["describe", "frugal"]);
    assert!(
        detail["last_failure"].is_null(),
        "probes reached a frozen app: {detail}"
    );
}

#[test]
fn without_cpu_throttling_an_idle_instance_keeps_running() {
    let d = Daemon::start(&[]);
    d.deploy_hello("busy", &["--min-instances", "1"]);
    let before = ticks(&d, "busy");
    std::thread::sleep(Duration::from_secs(1));
    let after = ticks(&d, "busy");
    assert!(
        after - before >= 40,
        "only {} ticks in a second",
        after - before
    );
    assert_eq!(states(&d, "busy"), ["ready"]);
}
