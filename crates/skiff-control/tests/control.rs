//! The control plane over a fake runtime, with tokio's clock paused where timing is the
//! point: scaling with demand, to zero after the idle time, back-off after crashes,
//! probes, deploys under load, conditional writes and the instance phases. No root, no
//! sandbox: the store is real SQLite, readiness and probes are real loopback TCP.

mod fake;

use fake::{spec, until, Behaviour, Call, Harness};
use skiff_control::documents::{DeployRequest, UpdateRequest};
use skiff_control::{backoff_after, Answer, Command, ControlError, Precondition};
use skiff_core::{Probe, SpecPatch};
use std::time::Duration;
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(600);

/// A harness with `web` deployed from `app:1` as `tune` says.
async fn web(tune: impl FnOnce(&mut skiff_core::ServiceSpec)) -> Harness {
    let h = Harness::new();
    h.deploy("web", spec(tune)).await.unwrap();
    h
}

/// An HTTP probe of `path` every 100 ms, failing after `failures` in a row.
fn fast_probe(path: &str, failures: u32) -> Probe {
    let mut p = Probe::new(Some(path.into()));
    p.period_ms = 100;
    p.timeout_ms = 100;
    p.failure_threshold = failures;
    p
}

/// A harness with `web` deployed as `tune` says, one instance kept up and ready.
async fn one_instance_up(tune: impl FnOnce(&mut skiff_core::ServiceSpec)) -> Harness {
    let h = web(|s| {
        s.min_instances = 1;
        tune(s);
    })
    .await;
    let pool = h.pool("web");
    until(LONG, "one ready", || pool.load().ready == 1).await;
    h
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_starts_an_instance_and_gets_its_slot() {
    let h = web(|_| {}).await;
    assert_eq!(
        h.rt.launches(),
        0,
        "a new revision waits for its first request"
    );
    let pool = h.pool("web");
    let lease = tokio::time::timeout(LONG, pool.acquire())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.rt.launches(), 1);
    assert_eq!(h.states("web").await, ["ready"]);
    drop(lease);
}

#[tokio::test]
async fn the_connection_that_proves_the_port_is_closed_at_once() {
    let h = web(|_| {}).await;
    let _lease = h.pool("web").acquire().await.unwrap();
    assert_eq!(h.states("web").await, ["ready"]);
    until(
        Duration::from_secs(10),
        "the readiness connection closed",
        || h.rt.closed_silently() == 1,
    )
    .await;
    assert_eq!(
        h.rt.accepted(),
        1,
        "one connection proved the port, nothing else came"
    );
}

#[tokio::test(start_paused = true)]
async fn queued_demand_scales_up_to_one_instance_per_slot_within_the_cap() {
    let h = web(|s| {
        s.concurrency = 1;
        s.max_instances = 3;
    })
    .await;
    let pool = h.pool("web");
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move { p.acquire().await })
        })
        .collect();
    until(LONG, "three instances ready", || pool.load().ready == 3).await;
    assert_eq!(pool.load().in_flight, 3);
    assert_eq!(pool.load().queued, 2, "the cap holds the rest in the queue");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.rt.launches(), 3, "never more than max-instances");
    for w in waiting {
        w.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_revision_scales_to_zero_after_its_idle_timeout_and_not_before() {
    let h = web(|s| s.idle_timeout_ms = 30_000).await;
    let pool = h.pool("web");
    drop(pool.acquire().await.unwrap());
    let idle_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(pool.load().ready, 1, "20 s idle: still up");
    assert_eq!(h.rt.stops(), 0);
    until(LONG, "scaled to zero", || {
        pool.load().ready == 0 && h.rt.running() == 0
    })
    .await;
    let stopped = h.rt.times(|c| matches!(c, Call::Stop(_)))[0];
    let idle_for = stopped - idle_from;
    assert!(
        idle_for >= Duration::from_secs(30) && idle_for < Duration::from_secs(40),
        "stopped after {idle_for:?} idle"
    );
    assert!(h.states("web").await.is_empty());
}

/// A quiet revision stops sampling until its idle time runs out (docs/density.md):
/// a request served at once by its ready instance must still wake it, or the idle time
/// would be counted from when the loop next looked, not from the request.
#[tokio::test(start_paused = true)]
async fn a_request_to_a_quiet_revision_restarts_its_idle_time() {
    let minute = Duration::from_secs(60);
    let h = web(|s| s.idle_timeout_ms = 10 * 60_000).await;
    let pool = h.pool("web");
    drop(pool.acquire().await.unwrap());
    until(LONG, "one ready", || pool.load().ready == 1).await;
    // Quiet for five minutes (its window emptied after one), then one request.
    tokio::time::sleep(5 * minute).await;
    drop(pool.acquire().await.unwrap());
    let idle_from = Instant::now();
    until(LONG * 4, "scaled to zero", || {
        pool.load().ready == 0 && h.rt.running() == 0
    })
    .await;
    let stopped = h.rt.times(|c| matches!(c, Call::Stop(_)))[0];
    let idle_for = stopped - idle_from;
    assert!(
        idle_for >= 10 * minute && idle_for < 10 * minute + Duration::from_secs(2),
        "stopped after {idle_for:?} idle"
    );
}

#[tokio::test(start_paused = true)]
async fn min_instances_stay_up_without_traffic() {
    let h = web(|s| {
        s.min_instances = 2;
        s.idle_timeout_ms = 1_000;
    })
    .await;
    let pool = h.pool("web");
    until(LONG, "two instances", || pool.load().ready == 2).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(pool.load().ready, 2);
    assert_eq!(h.rt.stops(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_crashing_instance_is_retried_with_exponential_backoff() {
    let h = web(|_| {}).await;
    h.rt.set(Behaviour::Crashes);
    let pool = h.pool("web");
    // A client that keeps asking, as traffic would.
    let client = {
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                let _ = pool.acquire().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    until(LONG, "five tries", || h.rt.launches() >= 5).await;
    client.abort();
    let tries = h.rt.times(|c| matches!(c, Call::Launch(_)));
    for (n, pair) in tries.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let backoff = backoff_after(n as u32 + 1);
        assert!(
            gap >= backoff && gap < backoff + Duration::from_millis(500),
            "try {} came {gap:?} after the one before; the back-off was {backoff:?}",
            n + 2
        );
    }
    let failure = h.describe("web").await.unwrap().last_failure.unwrap();
    assert!(
        failure.reason.contains("exited with code 1"),
        "{}",
        failure.reason
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_to_a_revision_in_backoff_is_refused_at_once_with_the_reason() {
    let h = web(|_| {}).await;
    h.rt.set(Behaviour::LaunchFails);
    let pool = h.pool("web");
    let refused = |r: Result<skiff_router::Lease, skiff_router::PoolError>| match r {
        Ok(_) => panic!("a revision that cannot start gave a slot"),
        Err(e) => e.to_string(),
    };
    let first = refused(pool.acquire().await);
    assert!(first.contains("the fake runtime refuses"), "{first}");
    let second = refused(pool.acquire().await);
    assert!(second.contains("unavailable"), "{second}");
    assert_eq!(h.rt.launches(), 0);
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_instance() {
    let h = one_instance_up(|s| s.liveness_probe = Some(fast_probe("/healthz", 2))).await;
    let pool = h.pool("web");
    h.rt.set_sick(true);
    until(Duration::from_secs(20), "a restart", || h.rt.stops() >= 1).await;
    h.rt.set_sick(false);
    until(Duration::from_secs(20), "ready again", || {
        h.rt.launches() >= 2 && pool.load().ready == 1
    })
    .await;
    let failure = h.describe("web").await.unwrap().last_failure.unwrap();
    assert!(
        failure
            .reason
            .contains("failed its liveness probe (GET /healthz failed 2 times"),
        "{}",
        failure.reason
    );
}

#[tokio::test]
async fn a_failing_readiness_probe_takes_the_instance_out_of_the_rotation_and_back() {
    let h = one_instance_up(|s| s.readiness_probe = Some(fast_probe("/ready", 1))).await;
    let pool = h.pool("web");
    let first = h.describe("web").await.unwrap().instances[0].id.clone();
    let phase_of = |d: skiff_control::documents::ServiceDetail| {
        d.instances
            .into_iter()
            .find(|i| i.id == first)
            .map(|i| i.state)
    };
    h.rt.set_sick(true);
    until(Duration::from_secs(20), "out of the rotation", || {
        pool.load().ready == 0
    })
    .await;
    assert_eq!(
        phase_of(h.describe("web").await.unwrap()).as_deref(),
        Some("unready")
    );
    h.rt.set_sick(false);
    // A replacement may start meanwhile (ready capacity fell below min-instances): wait
    // for the first instance itself to come back.
    let deadline = Instant::now() + Duration::from_secs(20);
    while phase_of(h.describe("web").await.unwrap()).as_deref() != Some("ready") {
        assert!(
            Instant::now() < deadline,
            "the unready instance never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !h.rt
            .calls()
            .iter()
            .any(|(_, c)| *c == Call::Stop(first.clone())),
        "readiness never restarts an instance"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deploy_under_load_warms_the_new_revision_before_traffic_moves() {
    let h = web(|_| {}).await;
    let old = h.pool("web");
    let lease = old.acquire().await.unwrap();
    let deployed = h
        .deploy("web", spec(|s| s.env = vec!["V=2".into()]))
        .await
        .unwrap();
    assert_eq!(deployed.revision, "web-00002");
    let new = h.pool("web");
    assert_eq!(new.config().revision, "web-00002");
    assert_eq!(
        new.load().ready,
        1,
        "the new revision had an instance before it took traffic"
    );
    let next = tokio::time::timeout(Duration::from_millis(5), new.acquire()).await;
    assert!(
        next.unwrap().is_ok(),
        "the next request needs no cold start"
    );
    assert_eq!(
        old.load().in_flight,
        1,
        "the old revision finishes what it has"
    );
    drop(lease);
    until(LONG, "the old revision drains and stops", || {
        old.load().ready == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_revision_that_fails_to_start_under_load_leaves_traffic_where_it_was() {
    let h = web(|_| {}).await;
    let old = h.pool("web");
    let _lease = old.acquire().await.unwrap();
    h.rt.set(Behaviour::Crashes);
    let err = h.deploy("web", spec(|s| s.port = 9000)).await.unwrap_err();
    assert!(matches!(err, ControlError::StartFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("traffic stays as it was"), "{err}");
    assert_eq!(h.pool("web").config().revision, "web-00001");
    assert_eq!(
        h.describe("web").await.unwrap().serving_revision.as_deref(),
        Some("web-00001")
    );
}

async fn version(h: &Harness, service: &str) -> u64 {
    h.describe(service).await.unwrap().version
}

fn update(service: &str, patch: SpecPatch, version: Option<u64>) -> Command {
    Command::Update {
        service: service.into(),
        request: UpdateRequest {
            patch,
            ..Default::default()
        },
        precondition: Precondition { version },
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_write_after_a_removal_is_refused_and_the_service_stays_removed() {
    let h = web(|_| {}).await;
    let seen = version(&h, "web").await;
    h.ctl
        .execute(Command::Remove {
            service: "web".into(),
            precondition: Precondition::NONE,
        })
        .await
        .unwrap();
    let stale = Command::Deploy {
        service: "web".into(),
        request: DeployRequest {
            spec: spec(|_| {}),
            traffic: None,
            no_traffic: false,
            tag: None,
            revision_name: None,
        },
        precondition: Precondition {
            version: Some(seen),
        },
    };
    let err = h.ctl.execute(stale).await.unwrap_err();
    assert!(matches!(err, ControlError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("no longer exists"), "{err}");
    let patched = h
        .ctl
        .execute(update("web", SpecPatch::default(), None))
        .await
        .unwrap_err();
    assert!(matches!(patched, ControlError::NotFound(_)), "{patched:?}");
    assert!(matches!(
        h.describe("web").await,
        Err(ControlError::NotFound(_))
    ));
    assert!(h.ctl.router().route("web").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_write_against_an_older_version_is_refused_and_the_current_one_goes_ahead() {
    let h = web(|_| {}).await;
    let first = version(&h, "web").await;
    let port = |p| SpecPatch {
        port: Some(p),
        ..Default::default()
    };
    h.ctl
        .execute(update("web", port(9000), Some(first)))
        .await
        .unwrap();
    let second = version(&h, "web").await;
    assert!(second > first);
    let err = h
        .ctl
        .execute(update("web", port(9100), Some(first)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("changed since version"), "{err}");
    let d = h.describe("web").await.unwrap();
    assert_eq!(d.revisions.len(), 2, "the refused write made no revision");
    assert_eq!(d.revisions[0].spec.port, 9000);
}

#[tokio::test(start_paused = true)]
async fn an_update_changes_only_what_it_names() {
    let h = web(|s| {
        s.concurrency = 7;
        s.env = vec!["A=1".into()];
    })
    .await;
    let answer = h
        .ctl
        .execute(update(
            "web",
            SpecPatch {
                memory_bytes: Some(256 << 20),
                ..Default::default()
            },
            None,
        ))
        .await
        .unwrap();
    let Answer::Deployed(d) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(d.revision, "web-00002");
    let latest = &h.describe("web").await.unwrap().revisions[0].spec;
    assert_eq!(latest.memory_bytes, 256 << 20);
    assert_eq!(
        (latest.concurrency, latest.env.clone()),
        (7, vec!["A=1".to_string()])
    );
}

#[tokio::test(start_paused = true)]
async fn a_prepared_sandbox_waits_unseen_and_the_next_start_takes_it() {
    let h = Harness::with(|c| c.prepare_sandboxes = true);
    h.deploy("web", spec(|_| {})).await.unwrap();
    let prepared = |h: &Harness| {
        h.rt.calls()
            .iter()
            .filter_map(|(_, c)| match c {
                Call::Prepare(id) => Some(id.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    until(LONG, "one sandbox prepared ahead", || {
        prepared(&h).len() == 1
    })
    .await;
    assert!(
        h.states("web").await.is_empty(),
        "a prepared sandbox is no instance yet"
    );
    let pool = h.pool("web");
    let _lease = pool.acquire().await.unwrap();
    let launched: Vec<_> =
        h.rt.calls()
            .into_iter()
            .filter_map(|(_, c)| match c {
                Call::Launch(id) => Some(id),
                _ => None,
            })
            .collect();
    assert_eq!(
        launched,
        [prepared(&h)[0].clone()],
        "the start took the prepared one"
    );
    until(LONG, "the next one prepared", || prepared(&h).len() == 2).await;
}

/// Prepare and discard calls so far.
fn prepared_and_discarded(h: &Harness) -> (usize, usize) {
    let count = |discard: bool| {
        h.rt.times(|c| match c {
            Call::Discard(_) => discard,
            Call::Prepare(_) => !discard,
            _ => false,
        })
        .len()
    };
    (count(false), count(true))
}

#[tokio::test(start_paused = true)]
async fn a_revision_with_an_idle_ready_instance_keeps_no_prepared_sandbox() {
    let h = Harness::with(|c| c.prepare_sandboxes = true);
    h.deploy("web", spec(|s| s.min_instances = 1))
        .await
        .unwrap();
    let pool = h.pool("web");
    // One request of the many an instance serves at once: nothing to prepare for.
    let lease = pool.acquire().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(lease);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (prepared, discarded) = prepared_and_discarded(&h);
    assert_eq!(prepared, discarded + 1, "the instance took one; none kept");
    assert_eq!(h.states("web").await, ["ready"]);
}

#[tokio::test(start_paused = true)]
async fn a_busy_revision_keeps_a_prepared_sandbox_for_a_minute() {
    let h = Harness::with(|c| c.prepare_sandboxes = true);
    h.deploy(
        "web",
        spec(|s| {
            s.min_instances = 1;
            s.concurrency = 1;
        }),
    )
    .await
    .unwrap();
    let pool = h.pool("web");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = prepared_and_discarded(&h);
    assert_eq!(idle.0, idle.1 + 1, "idle: none kept");
    // Its one slot taken: another instance may be wanted soon.
    let lease = pool.acquire().await.unwrap();
    until(LONG, "a sandbox prepared while busy", || {
        prepared_and_discarded(&h).0 == idle.0 + 1
    })
    .await;
    drop(lease);
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(
        prepared_and_discarded(&h).1,
        idle.1,
        "let go before a minute"
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        prepared_and_discarded(&h).1,
        idle.1 + 1,
        "kept a minute after it was busy"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttled_instance_is_frozen_while_idle_and_thawed_for_a_request() {
    let h = web(|s| s.cpu_throttling = true).await;
    let pool = h.pool("web");
    let lease = pool.acquire().await.unwrap();
    assert_eq!(h.states("web").await, ["ready"]);
    drop(lease);
    assert_eq!(h.states("web").await, ["frozen"]);
    let lease = pool.acquire().await.unwrap();
    assert_eq!(h.states("web").await, ["ready"]);
    drop(lease);
    let calls: Vec<_> =
        h.rt.calls()
            .into_iter()
            .filter_map(|(_, c)| match c {
                Call::Pause(_) => Some("pause"),
                Call::Resume(_) => Some("resume"),
                _ => None,
            })
            .collect();
    assert_eq!(calls, ["pause", "resume", "pause"]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_instance_and_waits_for_them() {
    let h = web(|s| s.min_instances = 3).await;
    let pool = h.pool("web");
    until(LONG, "three up", || pool.load().ready == 3).await;
    tokio::time::timeout(LONG, h.ctl.shutdown()).await.unwrap();
    assert_eq!(h.rt.running(), 0);
    assert_eq!(h.rt.stops(), 3);
}

#[tokio::test(start_paused = true)]
async fn removing_a_service_stops_its_instances_once_idle() {
    let h = one_instance_up(|_| {}).await;
    let pool = h.pool("web");
    h.ctl
        .execute(Command::Remove {
            service: "web".into(),
            precondition: Precondition::NONE,
        })
        .await
        .unwrap();
    until(LONG, "stopped", || h.rt.running() == 0).await;
    assert!(
        pool.acquire().await.is_err(),
        "a removed revision takes no request"
    );
}

fn set_traffic(service: &str, traffic: Vec<skiff_core::TrafficTarget>) -> Command {
    Command::SetTraffic {
        service: service.into(),
        traffic,
        precondition: Precondition::NONE,
    }
}

#[tokio::test(start_paused = true)]
async fn a_split_sends_exact_shares_and_a_tag_its_own_host() {
    use skiff_core::TrafficTarget;
    let h = web(|_| {}).await;
    h.deploy("web", spec(|s| s.port = 9000)).await.unwrap();
    h.ctl
        .execute(set_traffic(
            "web",
            vec![
                TrafficTarget::pinned("web-00001", 90),
                TrafficTarget {
                    revision: Some("web-00002".into()),
                    percent: 10,
                    tag: Some("canary".into()),
                },
            ],
        ))
        .await
        .unwrap();
    let route = h.ctl.router().route("web").unwrap();
    let mut to_new = 0;
    for _ in 0..100 {
        if route.pick().config().revision == "web-00002" {
            to_new += 1;
        }
    }
    assert_eq!(to_new, 10, "exactly 10 of every 100 requests");
    let tagged = h
        .ctl
        .router()
        .route("canary-web")
        .expect("the tag's host is routed");
    assert_eq!(tagged.pick().config().revision, "web-00002");
    let d = h.describe("web").await.unwrap();
    let shares: Vec<_> = d
        .revisions
        .iter()
        .map(|r| (r.name.as_str(), r.percent))
        .collect();
    assert_eq!(shares, [("web-00002", 10), ("web-00001", 90)]);
    assert_eq!(d.revisions[0].tags, ["canary"]);
}

#[tokio::test(start_paused = true)]
async fn rollback_sends_everything_to_the_revision_before() {
    let h = web(|_| {}).await;
    h.deploy("web", spec(|s| s.port = 9000)).await.unwrap();
    assert_eq!(h.pool("web").config().revision, "web-00002");
    h.ctl
        .execute(Command::Rollback {
            service: "web".into(),
            revision: None,
            precondition: Precondition::NONE,
        })
        .await
        .unwrap();
    assert_eq!(h.pool("web").config().revision, "web-00001");
    let err = h
        .ctl
        .execute(Command::Rollback {
            service: "web".into(),
            revision: None,
            precondition: Precondition::NONE,
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no revision before web-00001"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_no_traffic_deploy_keeps_requests_on_the_revision_serving_before() {
    let h = Harness::new();
    let first = h
        .ctl
        .execute(Command::Update {
            service: "web".into(),
            request: UpdateRequest {
                patch: SpecPatch {
                    image: Some("app:1".into()),
                    ..Default::default()
                },
                no_traffic: true,
                tag: None,
            },
            precondition: Precondition::NONE,
        })
        .await
        .unwrap_err();
    assert_eq!(
        first.field(),
        Some("no_traffic"),
        "a first revision must take traffic"
    );
    h.deploy("web", spec(|_| {})).await.unwrap();
    let answer = h
        .ctl
        .execute(Command::Update {
            service: "web".into(),
            request: UpdateRequest {
                patch: SpecPatch {
                    port: Some(9000),
                    ..Default::default()
                },
                no_traffic: true,
                tag: Some("next".into()),
            },
            precondition: Precondition::NONE,
        })
        .await
        .unwrap();
    let Answer::Deployed(d) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!((d.revision.as_str(), d.percent), ("web-00002", 0));
    assert_eq!(h.pool("web").config().revision, "web-00001");
    let tagged = h.ctl.router().route("next-web").unwrap();
    assert_eq!(tagged.pick().config().revision, "web-00002");
}

#[tokio::test(start_paused = true)]
async fn an_invalid_spec_names_its_field_and_writes_no_revision() {
    let h = Harness::new();
    type Tune = fn(&mut skiff_core::ServiceSpec);
    let cases: [(Tune, &str); 3] = [
        (|s| s.image = "nope:1".into(), "image"),
        (|s| s.timeout_ms = 0, "timeout"),
        (|s| s.env = vec!["NOEQUALS".into()], ""),
    ];
    for (tune, field) in cases {
        let err = h.deploy("web", spec(tune)).await.unwrap_err();
        assert!(
            matches!(err, ControlError::InvalidSpec { .. }),
            "{field}: {err:?}"
        );
        if !field.is_empty() {
            assert_eq!(err.field(), Some(field), "{err}");
        }
        assert!(matches!(
            h.describe("web").await,
            Err(ControlError::NotFound(_))
        ));
    }
    assert_eq!(h.rt.calls(), [], "nothing was started");
}

#[tokio::test(start_paused = true)]
async fn a_host_another_service_answers_at_is_refused() {
    let h = web(|_| {}).await;
    h.ctl
        .execute(Command::Update {
            service: "web".into(),
            request: UpdateRequest {
                patch: SpecPatch::default(),
                no_traffic: false,
                tag: Some("api".into()),
            },
            precondition: Precondition::NONE,
        })
        .await
        .unwrap();
    let err = h.deploy("api-web", spec(|_| {})).await.unwrap_err();
    assert!(matches!(err, ControlError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("already service web's"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_revision_that_loses_its_traffic_retires_once_it_is_idle() {
    let h = one_instance_up(|_| {}).await;
    let old = h.pool("web");
    let lease = old.acquire().await.unwrap();
    h.deploy("web", spec(|s| s.port = 9000)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        old.load().ready,
        1,
        "a request in flight keeps its instance"
    );
    assert!(h.ctl.runner("web-00001").is_some());
    drop(lease);
    until(LONG, "the old runner ends", || {
        h.ctl.runner("web-00001").is_none()
    })
    .await;
    assert_eq!(old.load().ready, 0);
    assert!(h.ctl.runner("web-00002").is_some());
}

#[tokio::test(start_paused = true)]
async fn a_revision_named_by_the_user_is_kept_and_never_changed() {
    let h = Harness::new();
    let blue = h
        .deploy_named("web", spec(|_| {}), Some("web-blue"))
        .await
        .unwrap();
    assert_eq!((blue.revision.as_str(), blue.percent), ("web-blue", 100));
    let again = h
        .deploy_named("web", spec(|_| {}), Some("web-blue"))
        .await
        .unwrap();
    assert_eq!(again.revision, "web-blue");
    assert_eq!(
        h.describe("web").await.unwrap().revisions.len(),
        1,
        "re-applying changes nothing"
    );
    let changed = h
        .deploy_named("web", spec(|s| s.port = 9000), Some("web-blue"))
        .await
        .unwrap_err();
    assert!(matches!(changed, ControlError::Conflict(_)), "{changed:?}");
    assert!(
        changed
            .to_string()
            .contains("exists already with another template"),
        "{changed}"
    );
    let foreign = h
        .deploy_named("web", spec(|_| {}), Some("api-green"))
        .await
        .unwrap_err();
    assert_eq!(foreign.field(), Some("revision-name"), "{foreign}");
    let green = h
        .deploy_named("web", spec(|s| s.port = 9000), Some("web-green"))
        .await
        .unwrap();
    assert_eq!(green.revision, "web-green");
    let d = h.describe("web").await.unwrap();
    let names: Vec<_> = d
        .revisions
        .iter()
        .map(|r| (r.name.as_str(), r.generation))
        .collect();
    assert_eq!(names, [("web-green", 2), ("web-blue", 1)]);
    h.ctl
        .execute(set_traffic(
            "web",
            vec![skiff_core::TrafficTarget::pinned("web-blue", 100)],
        ))
        .await
        .unwrap();
    assert_eq!(h.pool("web").config().revision, "web-blue");
    // A name that reads as web's but is another service's revision is no target.
    h.deploy("web-x", spec(|_| {})).await.unwrap();
    let err = h
        .ctl
        .execute(set_traffic(
            "web",
            vec![skiff_core::TrafficTarget::pinned("web-x-00001", 100)],
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("service web has no revision web-x-00001"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn run_as_non_root_refuses_a_root_image_until_it_gets_a_user() {
    let h = Harness::new();
    let err = h
        .deploy("web", spec(|s| s.run_as_non_root = true))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("user"), "{err}");
    assert!(err.to_string().contains("runs as root (uid 0)"), "{err}");
    assert!(matches!(
        h.describe("web").await,
        Err(ControlError::NotFound(_))
    ));
    h.deploy(
        "web",
        spec(|s| {
            s.run_as_non_root = true;
            s.user = Some("1000:1000".into());
        }),
    )
    .await
    .unwrap();
}

/// Unset initial scale: what a user's first deploy has (the harness's `spec` sets 0).
fn proved(s: &mut skiff_core::ServiceSpec) {
    s.autoscaling.initial_scale = None;
}

#[tokio::test(start_paused = true)]
async fn a_first_revision_is_proved_by_one_instance_before_it_serves() {
    let h = Harness::new();
    let deployed = h.deploy("web", spec(proved)).await.unwrap();
    assert_eq!(deployed.percent, 100);
    assert_eq!(h.rt.launches(), 1, "one instance started by the deploy");
    assert_eq!(h.states("web").await, ["ready"]);
}

#[tokio::test(start_paused = true)]
async fn a_broken_first_revision_fails_its_deploy_and_serves_nothing() {
    let h = Harness::new();
    h.rt.set(Behaviour::Crashes);
    let err = h.deploy("web", spec(proved)).await.unwrap_err();
    let skiff_control::ControlError::StartFailed { reason, .. } = &err else {
        panic!("not a start failure: {err:?}")
    };
    assert!(
        reason.contains("web-00001 failed to start") && reason.contains("exited with code 1"),
        "{reason}"
    );
    let d = h.describe("web").await.unwrap();
    assert_eq!(d.serving_revision, None, "nothing serves");
    // Fixed, the next deploy is the first to serve, proved the same way.
    h.rt.set(Behaviour::Healthy);
    let deployed = h.deploy("web", spec(proved)).await.unwrap();
    assert_eq!(
        (deployed.revision.as_str(), deployed.percent),
        ("web-00002", 100)
    );
}

#[tokio::test]
async fn a_failing_exec_liveness_probe_restarts_the_instance_and_names_the_command() {
    let mut probe = fast_probe("/unused", 2);
    probe.http_path = None;
    probe.exec = vec!["cat".into(), "/tmp/healthy".into()];
    let h = one_instance_up(|s| s.liveness_probe = Some(probe)).await;
    until(Duration::from_secs(20), "an exec probe", || {
        h.rt.calls()
            .iter()
            .any(|(_, c)| *c == Call::Exec("cat /tmp/healthy".into()))
    })
    .await;
    h.rt.set_sick(true);
    until(Duration::from_secs(20), "a restart", || h.rt.stops() >= 1).await;
    h.rt.set_sick(false);
    let failure = h.describe("web").await.unwrap().last_failure.unwrap();
    assert!(
        failure.reason.contains(
            "failed its liveness probe (exec cat /tmp/healthy failed 2 times in a row, last: exited with code 1)"
        ),
        "{}",
        failure.reason
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_names_its_instance_once() {
    let h = web(|_| {}).await;
    h.rt.set(Behaviour::LaunchFails);
    let _ = h.pool("web").acquire().await;
    let mut reason = None;
    for _ in 0..100 {
        if let Some(f) = h.describe("web").await.unwrap().last_failure {
            reason = Some(f.reason);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reason = reason.expect("a failure was recorded");
    assert!(reason.contains("the fake runtime refuses"), "{reason}");
    assert_eq!(reason.matches("instance ").count(), 1, "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_that_cannot_be_prepared_is_retried_with_backoff_not_every_tick() {
    let h = Harness::with(|c| c.prepare_sandboxes = true);
    h.rt.set(Behaviour::PrepareFails);
    h.deploy("web", spec(|_| {})).await.unwrap();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let tries = h.rt.times(|c| matches!(c, Call::Prepare(_)));
    // 1 + 2 + 4 + 8 + 16 + 30 s: the seventh try comes 61 s after the first.
    assert!(
        (5..=7).contains(&tries.len()),
        "{} preparations in a minute (the loop ticks 600 times)",
        tries.len()
    );
    for (n, pair) in tries.windows(2).enumerate() {
        let want = backoff_after(n as u32 + 1);
        let gap = pair[1] - pair[0];
        assert!(
            gap >= want && gap < want + Duration::from_millis(500),
            "try {} came {gap:?} after the one before; the back-off was {want:?}",
            n + 2
        );
    }
    h.rt.set(Behaviour::Healthy);
    until(LONG, "a prepared sandbox once the host recovers", || {
        h.rt.calls().len() > tries.len()
    })
    .await;
    assert!(Instant::now() - start < Duration::from_secs(60 + 31));
}
