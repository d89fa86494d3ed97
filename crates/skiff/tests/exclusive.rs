//! One daemon per data directory, one owner per ingress port: a second `skiff server`
//! on the same home, or on a port another process holds, refuses to start and says why
//! (before, the kernel split traffic between two daemons through SO_REUSEPORT).

mod daemon;

use daemon::{skiff_bin, Daemon, Subnet};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs a second server with `args`; it must exit (not serve), and its stderr is returned.
fn second_server(home: &std::path::Path, socket: &std::path::Path, args: &[&str]) -> String {
    let subnet = Subnet::claim();
    let mut child = Command::new(skiff_bin())
        .args([
            "--home",
            home.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
        ])
        .arg("server")
        .args([
            "--instance-subnet",
            &subnet.cidr(),
            "--registry",
            "127.0.0.1:0",
        ])
        .args(["--dns-upstream", "127.0.0.1:9"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "the second server exited with success");
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return err;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second server started and kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_daemon_on_the_same_data_directory_refuses_to_start() {
    let d = Daemon::start(&[]);
    let other_socket = d.home.path().join("second.sock");
    let err = second_server(d.home.path(), &other_socket, &["--ingress", "127.0.0.1:0"]);
    assert!(
        err.contains("is used by another skiff daemon")
            && err.contains(d.home.path().to_str().unwrap()),
        "{err}"
    );
    // The first one still serves.
    d.deploy_hello("still", &[]);
    assert_eq!(d.get("still", "/").status, 200);
}

#[test]
fn a_daemon_refuses_an_ingress_port_another_process_holds() {
    let d = Daemon::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let taken = format!("127.0.0.1:{}", d.port);
    let err = second_server(
        home.path(),
        &home.path().join("api.sock"),
        &["--ingress", &taken],
    );
    assert!(err.contains(&taken) && err.contains("in use"), "{err}");
    d.deploy_hello("mine", &[]);
    for _ in 0..20 {
        assert_eq!(d.get("mine", "/").status, 200, "a request went elsewhere");
    }
}
