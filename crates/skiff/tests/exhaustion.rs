//! The daemon under exhaustion and after a crash (issue 17, items 2 to 4): out of file
//! descriptors every request still gets an answer, with no busy loop, and SIGTERM still
//! stops it; after kill -9 a restart reclaims every leftover of its scope, whatever the
//! rows say, and a clean stop leaves nothing in the cgroup tree, on `lo` or in nftables.

mod daemon;

use daemon::{cpu_ticks, eventually, http, Daemon};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn out_of_descriptors_every_request_answers_and_sigterm_finishes() {
    // A low limit, the hard limit too, so the daemon cannot raise it (an idle instance
    // costs the daemon one descriptor: at Debian's usual 1,024, 150 services fit); and
    // room for 1,023 instances' addresses (a test's /24 has 63), so that descriptors
    // are what runs out. No other test uses 10.94.0.0/16.
    let mut d = Daemon::start_limited(&["--instance-subnet", "10.94.0.0/20"], Some(320));
    let services: Vec<String> = (1..=150).map(|n| format!("s{n}")).collect();
    for s in &services {
        d.deploy_hello(s, &["--initial-instances", "0"]);
    }
    let mut served = 0;
    let mut refused = Vec::new();
    for s in &services {
        let started = Instant::now();
        let r = http(d.port, &format!("{s}.localhost"), "GET", "/", &[], b"");
        // Timeouts of the client stand for hung requests: none may hang.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{s}: answered after {:?}",
            started.elapsed()
        );
        match r.status {
            200 => served += 1,
            503 => {
                assert!(
                    r.text().contains("file descriptors"),
                    "{s}: a 503 that does not say why: {}",
                    r.text()
                );
                refused.push(s.clone());
            }
            other => panic!("{s}: {other} {}", r.text()),
        }
    }
    assert!(served >= 30, "only {served} of 150 served");
    assert!(
        !refused.is_empty(),
        "150 services fit in 320 descriptors: the test no longer exhausts them"
    );
    let detail = d.json(&["describe", &refused[0]]);
    let reason = detail["last_failure"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("RLIMIT_NOFILE"), "{detail}");

    // No busy loop: a tenth of a core at most once nothing is asked of it (a busy
    // accept or preparation loop takes a whole one, for good). Right after the last
    // request the refused revisions' preparations are still retried at short back-offs
    // (36-62 ticks in the first 3 s, 5-14 in the next ones): wait for that to pass.
    let settling = Instant::now() + Duration::from_secs(30);
    let used = loop {
        let before = cpu_ticks(d.pid());
        std::thread::sleep(Duration::from_secs(3));
        let used = cpu_ticks(d.pid()) - before;
        if used < 30 || Instant::now() > settling {
            break used;
        }
    };
    assert!(
        used < 30,
        "{used} ticks of CPU in 3 s, still busy 30 s after the last request"
    );

    let stopping = Instant::now();
    assert_eq!(d.stop(), Some(0));
    assert!(stopping.elapsed() < Duration::from_secs(20));
    assert_eq!(d.scope_leftovers(), Vec::<String>::new());
}

/// The directories under this daemon's scope that hold instance `id`.
fn leftovers_of(d: &Daemon, id: &str) -> Vec<String> {
    d.scope_leftovers()
        .into_iter()
        .filter(|p| p.ends_with(&format!("/{id}")))
        .collect()
}

fn instance_ids(d: &Daemon, service: &str) -> Vec<String> {
    let detail = d.json(&["describe", service]);
    detail["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn after_kill_9_a_restart_reclaims_every_leftover() {
    let mut d = Daemon::start(&[]);
    d.deploy_hello("warm", &["--min-instances", "2"]);
    eventually(Duration::from_secs(20), "two ready", || {
        d.ready("warm") == 2
    });
    let old = instance_ids(&d, "warm");
    assert!(old.len() >= 2, "{old:?}");

    // What a daemon killed mid-start, or one whose rows say ended, leaves: a cgroup and
    // a scratch directory no running instance owns.
    let scopes: Vec<String> = d
        .scope_leftovers()
        .into_iter()
        .filter(|p| p.ends_with(&d.scope()))
        .collect();
    assert!(
        !scopes.is_empty(),
        "no scope directories while instances run"
    );
    for scope in &scopes {
        std::fs::create_dir(format!("{scope}/planted-1")).unwrap();
    }

    d.kill9();
    for id in &old {
        assert!(
            !leftovers_of(&d, id).is_empty(),
            "{id}: nothing left by kill -9 (the test would prove nothing)"
        );
    }

    d.launch();
    eventually(Duration::from_secs(20), "two ready again", || {
        d.ready("warm") == 2
    });
    for id in old.iter().chain(&["planted-1".to_owned()]) {
        assert_eq!(leftovers_of(&d, id), Vec::<String>::new(), "{id}");
    }
    let r = http(d.port, "warm.localhost", "GET", "/", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());

    assert_eq!(d.stop(), Some(0));
    assert_eq!(d.scope_leftovers(), Vec::<String>::new());
    let lo = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .unwrap();
    let prefix = format!("10.91.{}.", d.subnet.third_octet);
    assert!(
        !String::from_utf8_lossy(&lo.stdout).contains(&prefix),
        "addresses of {prefix}0/24 left on lo"
    );
    let base = std::net::Ipv4Addr::new(10, 91, d.subnet.third_octet as u8, 0);
    let table = format!("skiff_{:08x}_24", u32::from(base));
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains(&table),
        "nftables table {table} left"
    );
}
