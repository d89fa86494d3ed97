//! Damaged or lost state fails loudly (issue 17, item 6): a database with garbled pages
//! stops the daemon with what to do, an empty database beside image content is named,
//! and a layer snapshot removed behind skiff's back is reported as missing at deploy
//! and in `skiff image ls`, not as a missing user.

mod daemon;

use daemon::{skiff_bin, stderr, Daemon, Subnet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a server on `home` did: `Err(stderr)` when it exited at once, `Ok(stderr)` when
/// it came up (it is then stopped with SIGTERM).
fn server_on(home: &std::path::Path) -> Result<String, String> {
    let subnet = Subnet::claim();
    let mut child = Command::new(skiff_bin())
        .args(["--home", home.to_str().unwrap()])
        .args(["--socket", home.join("api.sock").to_str().unwrap()])
        .arg("server")
        .args(["--ingress", "127.0.0.1:0", "--registry", "127.0.0.1:0"])
        .args(["--instance-subnet", &subnet.cidr()])
        .args(["--dns-upstream", "127.0.0.1:9"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let came_up = line.contains("ingress http://");
    if came_up {
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    if came_up {
        assert!(status.success(), "{err}");
        Ok(err)
    } else {
        assert!(
            !status.success(),
            "exited with success without serving: {err}"
        );
        Err(err)
    }
}

#[test]
fn a_damaged_database_stops_the_daemon_with_what_to_do() {
    let mut d = Daemon::start(&[]);
    d.deploy_hello("kept", &[]);
    assert_eq!(d.stop(), Some(0));
    let db = d.home.path().join("skiff.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() >= 3 * 4096, "{} bytes", bytes.len());
    // Every page after the first garbled: the schema page still opens.
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = server_on(d.home.path()).expect_err("a daemon started on a damaged database");
    assert!(
        err.contains("is damaged") && err.contains("skiff backup") && err.contains("skiff.db"),
        "{err}"
    );
}

#[test]
fn an_empty_database_beside_image_content_is_named() {
    let mut d = Daemon::start(&[]);
    assert_eq!(d.stop(), Some(0));
    let db = d.home.path().join("skiff.db");
    std::fs::write(&db, b"").unwrap();
    for side in ["skiff.db-wal", "skiff.db-shm"] {
        let _ = std::fs::remove_file(d.home.path().join(side));
    }
    let err = server_on(d.home.path()).expect("a daemon on an empty database starts");
    assert!(
        err.contains("holds no image and no service") && err.contains("skiff backup"),
        "{err}"
    );
    // A new data directory has nothing to say.
    let fresh = tempfile::tempdir().unwrap();
    let err = server_on(fresh.path()).unwrap();
    assert!(!err.contains("holds no image"), "{err}");
}

#[test]
fn a_missing_snapshot_is_named_at_deploy_and_in_image_ls() {
    let d = Daemon::start(&[]);
    let snapshots = d.home.path().join("snapshots");
    for entry in std::fs::read_dir(&snapshots).unwrap() {
        std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    let out = d.cli(&["deploy", "web", "--image", "hello"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("snapshot of layer") && err.contains("is missing"),
        "{err}"
    );
    let table = d.ok(&["image", "ls"]);
    assert!(table.contains("snapshot(s) missing"), "{table}");
    let listed = d.json(&["image", "ls"]);
    assert_eq!(
        listed[0]["missing_snapshots"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

#[test]
fn a_removed_service_takes_its_logs_with_it() {
    let d = Daemon::start(&[]);
    d.deploy_hello("gone", &[]);
    assert_eq!(d.get("gone", "/").status, 200);
    let detail = d.json(&["describe", "gone"]);
    let old = detail["instances"][0]["id"].as_str().unwrap().to_owned();
    let log = d.home.path().join("logs").join(format!("{old}.log"));
    assert!(log.exists(), "{}", log.display());
    d.ok(&["rm", "gone"]);
    daemon::eventually(Duration::from_secs(20), "the log deleted", || !log.exists());
    d.deploy_hello("gone", &[]);
    let logs = d.ok(&["logs", "gone"]);
    assert!(
        !logs.contains(&old),
        "the removed service's logs show: {logs}"
    );
}

/// Bytes in the daemon's log files.
fn logs_size(d: &Daemon) -> u64 {
    std::fs::read_dir(d.home.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn a_flooding_instance_is_held_to_its_log_rate() {
    let d = Daemon::start(&["--log-rate", "64Ki"]);
    d.deploy_hello("loud", &["--min-instances", "1"]);
    assert_eq!(d.get("loud", "/flood").status, 200);
    // Past the burst (eight times the rate), the log grows at the rate: each 64 KiB of
    // output is about 100 KiB of records, at most 128 KiB. So once the log is past 1 MiB
    // the whole burst (512 KiB of output) is in it, however late the pump got to it.
    daemon::eventually(Duration::from_secs(30), "the burst logged", || {
        logs_size(&d) > (1 << 20) + (64 << 10)
    });
    let (t0, size0) = (Instant::now(), logs_size(&d));
    std::thread::sleep(Duration::from_secs(2));
    let (grown, secs) = (logs_size(&d) - size0, t0.elapsed().as_secs_f64());
    let bound = (2.0 * 65536.0 * secs) as u64 + (128 << 10);
    assert!(grown > 0, "the flood stopped");
    assert!(
        grown <= bound,
        "{grown} bytes in {secs:.1} s at 64 KiB/s (bound {bound})"
    );
}

#[test]
fn all_logs_together_stay_within_their_budget() {
    let d = Daemon::start(&["--log-budget", "1Mi", "--log-rate", "4Mi"]);
    d.deploy_hello("loud", &["--min-instances", "1"]);
    assert_eq!(d.get("loud", "/flood").status, 200);
    // The flood would write 4 MiB a second: the budget holds it at 1 MiB.
    daemon::eventually(Duration::from_secs(20), "the budget reached", || {
        logs_size(&d) > 900 << 10
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(logs_size(&d) <= 1 << 20, "{} bytes", logs_size(&d));
}

/// A tmpfs of `mib` MiB mounted on a new temporary directory; unmounted on drop.
struct SmallDisk {
    dir: Option<tempfile::TempDir>,
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn new(mib: u64) -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("skiff-e2e-small-")
            .tempdir()
            .unwrap();
        let path = dir.path().to_owned();
        let size = format!("size={mib}m,mode=0700");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &size,
                "skiff-e2e",
                path.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        SmallDisk {
            dir: Some(dir),
            path,
        }
    }

    /// Fills what is left with one file.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = vec![7u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l", self.path.to_str().unwrap()])
            .status();
        drop(self.dir.take());
    }
}

#[test]
fn on_a_full_disk_image_ls_and_rm_still_work() {
    let disk = SmallDisk::new(64);
    let home = tempfile::Builder::new()
        .prefix("home-")
        .tempdir_in(&disk.path)
        .unwrap();
    let mut d = Daemon::start_at(home, &[], None);
    d.deploy_hello("filler", &[]);
    assert_eq!(d.get("filler", "/").status, 200);
    disk.fill();
    let listed = d.cli(&["image", "ls"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("hello"));
    let removed = d.cli(&["rm", "filler"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(d.get("filler", "/").status, 404);
    let gone = d.cli(&["describe", "filler"]);
    assert!(!gone.status.success(), "the service came back");
    assert_eq!(d.stop(), Some(0));
    // Nothing of it is left in the store: its prepared sandbox's row neither.
    let db = skiff_store::Store::open_read_only(&d.home.path().join("skiff.db")).unwrap();
    let left = db.service_instances("filler").unwrap();
    assert!(left.is_empty(), "{} instance rows left", left.len());
}

#[test]
fn a_daemon_stopped_on_a_full_disk_leaves_no_prepared_row() {
    let disk = SmallDisk::new(64);
    let home = tempfile::Builder::new()
        .prefix("home-")
        .tempdir_in(&disk.path)
        .unwrap();
    let mut d = Daemon::start_at(home, &[], None);
    d.deploy_hello("kept", &[]);
    assert_eq!(d.get("kept", "/").status, 200);
    disk.fill();
    assert_eq!(d.stop(), Some(0));
    let db = skiff_store::Store::open_read_only(&d.home.path().join("skiff.db")).unwrap();
    let rows = db.service_instances("kept").unwrap();
    let unstarted = rows.iter().filter(|r| r.pid.is_none()).count();
    assert_eq!(unstarted, 0, "{rows:?}");
}
