//! `skiff logs` streams (issue 17, item 9): a history larger than the daemon should hold
//! goes through it without staying in its memory, `--since` finds its start without
//! reading the files through, and `--follow` sees every line through a rotation and the
//! lines of an instance that starts while it follows.

mod daemon;

use daemon::{skiff_bin, Daemon};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Lines the flood writes: about 70 MB of records, past the 64 MiB at which a log
/// rotates.
const LINES: u64 = 720_000;

/// `skiff logs ARGS…` running, its stdout piped.
fn logs(d: &Daemon, args: &[&str]) -> Child {
    Command::new(skiff_bin())
        .args(["--home", d.home.path().to_str().unwrap()])
        .args(["--socket", d.socket.to_str().unwrap()])
        .arg("logs")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("running skiff logs")
}

/// The flood's line numbers in what `skiff logs` prints (`TIME INSTANCE MESSAGE`),
/// with the time of each, sent as they come; other lines are sent whole as `Err`.
fn flood_lines(child: &mut Child) -> mpsc::Receiver<Result<(u64, String), String>> {
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { return };
            let mut parts = line.splitn(3, ' ');
            let (time, _instance) = (parts.next().unwrap_or(""), parts.next());
            let n = parts
                .next()
                .and_then(|m| m.strip_prefix("flood line "))
                .and_then(|m| m.split(':').next())
                .and_then(|n| n.parse().ok());
            let sent = match n {
                Some(n) => tx.send(Ok((n, time.to_owned()))),
                None => tx.send(Err(line)),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    rx
}

/// Every line until the output ends: the flood's numbers (in order) and the others.
fn all_of(child: &mut Child) -> (Vec<(u64, String)>, Vec<String>) {
    let rx = flood_lines(child);
    let (mut flood, mut other) = (Vec::new(), Vec::new());
    for item in rx {
        match item {
            Ok(x) => flood.push(x),
            Err(l) => other.push(l),
        }
    }
    assert!(child.wait().unwrap().success());
    (flood, other)
}

fn proc_field(pid: u32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/{file}"))
}

fn assert_consecutive(numbers: &[u64], from: u64, to: u64) {
    assert_eq!(numbers.first(), Some(&from), "the first line");
    assert_eq!(numbers.last(), Some(&to), "the last line");
    if let Some(w) = numbers.windows(2).find(|w| w[1] != w[0] + 1) {
        panic!("line {} follows line {}", w[1], w[0]);
    }
}

#[test]
fn a_large_history_streams_since_seeks_and_follow_sees_every_line() {
    let d = Daemon::start(&["--log-rate", "1Gi", "--log-budget", "1Gi"]);
    d.deploy_hello("loud", &["--min-instances", "1"]);
    let first = d.json(&["describe", "loud"])["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut follower = logs(&d, &["loud", "--follow"]);
    let followed = flood_lines(&mut follower);
    assert_eq!(d.get("loud", &format!("/flood?lines={LINES}")).status, 200);
    let mut seen = Vec::with_capacity(LINES as usize);
    while seen.len() < LINES as usize {
        match followed.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok((n, _))) => seen.push(n),
            Ok(Err(_)) => {}
            Err(e) => panic!("{e} after {} flood lines followed", seen.len()),
        }
    }
    assert_consecutive(&seen, 0, LINES - 1);
    let rotated = d.home.path().join("logs").join(format!("{first}.log.1"));
    assert!(
        rotated.exists(),
        "the log was not rotated: the test is too small"
    );

    // The whole history, through the daemon, in less memory than it takes.
    let pid = d.pid();
    let peak_before = proc_field(pid, "status", "VmHWM");
    let (flood, _) = all_of(&mut logs(&d, &["loud"]));
    let numbers: Vec<u64> = flood.iter().map(|f| f.0).collect();
    assert_consecutive(&numbers, 0, LINES - 1);
    let grown_kib = proc_field(pid, "status", "VmHWM") - peak_before;
    assert!(
        grown_kib < 32 << 10,
        "the daemon's peak memory grew by {grown_kib} KiB for a 70 MB history"
    );

    // --since: the lines from a time near the end, found without reading the files.
    let since = flood[flood.len() - 1000].1.clone();
    let read_before = proc_field(pid, "io", "rchar");
    let (recent, _) = all_of(&mut logs(&d, &["loud", "--since", &since]));
    let read_kib = (proc_field(pid, "io", "rchar") - read_before) >> 10;
    assert!(
        recent.iter().all(|(_, t)| *t >= since),
        "a line before {since}"
    );
    let recent: Vec<u64> = recent.iter().map(|f| f.0).collect();
    assert!(
        recent.len() >= 1000 && recent.len() < 20_000,
        "{} lines since {since}",
        recent.len()
    );
    assert_consecutive(&recent, LINES - recent.len() as u64, LINES - 1);
    assert!(
        read_kib < 8 << 10,
        "the daemon read {read_kib} KiB for --since"
    );

    // A new instance (a new revision) shows in the follow.
    d.deploy_hello("loud", &["--min-instances", "1", "--env", "ROUND=2"]);
    let second = d.json(&["describe", "loud"])["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .find(|id| *id != first)
        .expect("the new revision's instance")
        .to_owned();
    let started = format!("as {second}");
    loop {
        match followed.recv_timeout(Duration::from_secs(30)) {
            Ok(Err(line)) if line.contains(&started) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}: the new instance's start was not followed"),
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn since_must_be_a_time_and_the_service_must_exist() {
    let d = Daemon::start(&[]);
    d.deploy_hello("quiet", &[]);
    let out = d.cli(&["logs", "nothing-here"]);
    assert!(!out.status.success());
    let answer = d.api("GET", "/v1/services/quiet/logs?since=yesterday", "", "");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("RFC 3339"), "{answer}");
    let answer = d.api(
        "GET",
        "/v1/services/quiet/logs?since=2026-01-02T15:04:05Z",
        "",
        "",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
