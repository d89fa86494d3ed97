//! End-to-end: revisions and traffic. A percent split across revisions, tags reachable
//! at TAG-NAME.<domain>, rollback, pinned traffic across deploys, refusals that name
//! the problem, and old revisions deleted past the kept count.

mod daemon;

use daemon::{http, stderr, Daemon};

fn deploy_revisions(d: &Daemon, service: &str, n: usize) {
    for i in 1..=n {
        d.deploy_hello(service, &["-e", &format!("GENERATION={i}")]);
    }
}

#[test]
fn a_90_10_split_holds_over_1000_requests_and_tags_reach_their_revisions() {
    let d = Daemon::start(&[]);
    deploy_revisions(&d, "split", 2);
    d.ok(&["traffic", "split", "split-00001=90", "LATEST=10"]);
    let host = "split.localhost";
    let mut to_old = 0;
    for _ in 0..1000 {
        match d.revision_at(host).as_str() {
            "split-00001" => to_old += 1,
            "split-00002" => {}
            other => panic!("answered by {other}"),
        }
    }
    assert!(
        (850..=950).contains(&to_old),
        "{to_old} of 1000 requests went to the 90 % revision"
    );

    d.ok(&[
        "traffic",
        "split",
        "--tag",
        "old=split-00001",
        "--tag",
        "new=LATEST",
    ]);
    for _ in 0..5 {
        assert_eq!(d.revision_at("old-split.localhost"), "split-00001");
        assert_eq!(d.revision_at("new-split.localhost"), "split-00002");
    }
    let detail = d.json(&["describe", "split"]);
    let traffic = detail["traffic"].as_array().unwrap();
    let old = traffic.iter().find(|t| t["tag"] == "old").unwrap();
    assert_eq!(old["revision"], "split-00001");
    assert_eq!(old["percent"], 0);
    assert!(
        old["url"]
            .as_str()
            .unwrap()
            .starts_with("http://old-split.localhost:"),
        "{old}"
    );
    // The split itself did not move.
    let percents: Vec<_> = detail["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["percent"].as_u64().unwrap()))
        .collect();
    assert_eq!(percents, [("split-00002", 10), ("split-00001", 90)]);

    d.ok(&["traffic", "split", "--remove-tag", "old"]);
    let r = http(d.port, "old-split.localhost", "GET", "/", &[], b"");
    assert_eq!(r.status, 404, "a removed tag still answers: {}", r.text());
}

#[test]
fn rollback_pins_the_previous_revision_across_restarts_and_later_deploys_wait_for_to_latest() {
    let d = Daemon::start(&[]);
    deploy_revisions(&d, "roll", 2);
    assert_eq!(d.revision_at("roll.localhost"), "roll-00002");

    d.ok(&["rollback", "roll"]);
    assert_eq!(d.revision_at("roll.localhost"), "roll-00001");
    // The pin and a tag outlive a daemon restart.
    d.ok(&["traffic", "roll", "--tag", "newest=roll-00002"]);
    let mut d = d;
    assert_eq!(d.stop(), Some(0));
    d.launch();
    assert_eq!(d.revision_at("roll.localhost"), "roll-00001");
    assert_eq!(d.revision_at("newest-roll.localhost"), "roll-00002");

    // Pinned: a new revision is deployed but takes no traffic.
    let out = d.ok(&["deploy", "roll", "-e", "GENERATION=3"]);
    assert!(out.contains("gets no traffic"), "{out}");
    for _ in 0..5 {
        assert_eq!(d.revision_at("roll.localhost"), "roll-00001");
    }
    d.ok(&["traffic", "roll", "--to-latest"]);
    assert_eq!(d.revision_at("roll.localhost"), "roll-00003");

    d.ok(&["rollback", "roll", "roll-00002"]);
    assert_eq!(d.revision_at("roll.localhost"), "roll-00002");
    // Back from the oldest there is nowhere to go.
    d.ok(&["rollback", "roll", "roll-00001"]);
    let out = d.cli(&["rollback", "roll"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no revision before roll-00001"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_traffic_is_refused_with_the_reason_and_changes_nothing() {
    let d = Daemon::start(&[]);
    deploy_revisions(&d, "api", 2);
    d.deploy_hello("web", &[]);
    d.deploy_hello("v1-api2", &[]);
    let refused = |args: &[&str], says: &str| {
        let out = d.cli(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    };
    refused(
        &["traffic", "api", "api-00001=50", "LATEST=40"],
        "percents add up to 90, not 100",
    );
    refused(
        &["traffic", "api", "api-00009=100"],
        "service api has no revision api-00009",
    );
    refused(
        &["traffic", "api", "web-00001=100"],
        "\"web-00001\" is not a revision of service api",
    );
    refused(&["traffic", "api", "--tag", "Bad=LATEST"], "tag \"Bad\"");
    // A tag whose host is another service's.
    d.deploy_hello("api2", &[]);
    refused(
        &["traffic", "api2", "--tag", "v1=LATEST"],
        "host v1-api2.localhost is already service v1-api2's",
    );
    // A service whose host is another service's tag.
    d.ok(&["traffic", "api", "--tag", "blue=LATEST"]);
    refused(
        &["deploy", "blue-api", "--image", "hello"],
        "host blue-api.localhost is already service api's",
    );
    // Nothing moved.
    assert_eq!(d.revision_at("api.localhost"), "api-00002");
}

#[test]
fn revisions_past_the_kept_count_are_deleted_unless_they_get_traffic() {
    let d = Daemon::start(&["--revisions-kept", "2"]);
    deploy_revisions(&d, "old", 2);
    d.ok(&["traffic", "old", "--tag", "first=old-00001"]);
    deploy_revisions(&d, "old", 2);
    let names = |d: &Daemon| -> Vec<String> {
        d.json(&["describe", "old"])["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // 4 deploys: the newest two, and the tagged first one.
    assert_eq!(names(&d), ["old-00004", "old-00003", "old-00001"]);
    assert_eq!(d.revision_at("first-old.localhost"), "old-00001");
    d.ok(&["traffic", "old", "--remove-tag", "first"]);
    d.deploy_hello("old", &[]);
    assert_eq!(names(&d), ["old-00005", "old-00004"]);
}

/// gcloud's blue/green deploy: `deploy --no-traffic --tag green` puts a new revision up
/// at its tag URL only, and `traffic --to-latest` sends everyone there.
#[test]
fn deploy_with_no_traffic_and_a_tag_leaves_traffic_where_it_was() {
    let d = Daemon::start(&[]);
    // A service's first revision must take the traffic: refused, nothing created.
    let first = d.cli(&["deploy", "bg", "--image", "hello", "--no-traffic"]);
    assert!(!first.status.success());
    assert!(
        stderr(&first).contains("no serving revision yet"),
        "{}",
        stderr(&first)
    );
    assert!(!d.cli(&["describe", "bg"]).status.success(), "bg exists");

    d.deploy_hello("bg", &["-e", "GENERATION=1"]);
    let out = d.deploy_hello(
        "bg",
        &["-e", "GENERATION=2", "--no-traffic", "--tag", "green"],
    );
    assert!(out.contains("gets no traffic"), "{out}");
    assert!(out.contains("Tagged: http://green-bg.localhost:"), "{out}");
    for _ in 0..5 {
        assert_eq!(d.revision_at("bg.localhost"), "bg-00001");
        assert_eq!(d.revision_at("green-bg.localhost"), "bg-00002");
    }

    // The tag moves with the next tagged deploy; the old target loses it.
    d.deploy_hello(
        "bg",
        &["-e", "GENERATION=3", "--no-traffic", "--tag", "green"],
    );
    assert_eq!(d.revision_at("green-bg.localhost"), "bg-00003");
    assert_eq!(d.revision_at("bg.localhost"), "bg-00001");
    let tags: Vec<_> = d.json(&["describe", "bg"])["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["tag"].is_string())
        .map(|t| (t["tag"].clone(), t["revision"].clone()))
        .collect();
    assert_eq!(tags, [("green".into(), "bg-00003".into())]);

    // A bad tag is refused before any revision is written.
    let bad = d.cli(&["deploy", "bg", "--tag", "Green!"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("Green!"), "{}", stderr(&bad));
    let revisions = d.json(&["describe", "bg"])["revisions"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(revisions, 3);

    d.ok(&["traffic", "bg", "--to-latest"]);
    assert_eq!(d.revision_at("bg.localhost"), "bg-00003");
    assert_eq!(d.revision_at("green-bg.localhost"), "bg-00003");
}
