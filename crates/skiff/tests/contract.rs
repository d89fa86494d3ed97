//! The container contract as an app sees it through the daemon (Knative's runtime
//! contract, Cloud Run's container contract): its resolver, its limits in its own
//! read-only cgroup view, stdin at EOF, its hostname and environment, and the
//! capabilities it was asked to give up.

mod daemon;

use daemon::Daemon;

/// The body of hello's `/file?path=…` (read as the app's user), or a panic with why not.
fn file(d: &Daemon, service: &str, path: &str) -> String {
    let r = d.get(service, &format!("/file?path={path}"));
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.text()
}

#[test]
fn an_instance_sees_its_resolver_limits_stdin_and_identity() {
    let d = Daemon::start(&[]);
    d.deploy_hello("app", &["--memory", "96Mi", "--cpu", "0.5"]);

    // Readable by the app's (non-root) user, whatever the daemon's umask.
    let resolv = file(&d, "app", "/etc/resolv.conf");
    assert!(
        resolv.contains(&format!("nameserver {}\n", d.subnet.service_addr())),
        "{resolv}"
    );
    assert!(resolv.contains("search svc.skiff.internal\n"), "{resolv}");

    // Runtimes that size themselves from their cgroup find the limit there.
    let memory = d.get("app", "/file?path=/sys/fs/cgroup/memory.max");
    let memory = if memory.status == 200 {
        memory.text()
    } else {
        file(&d, "app", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    };
    assert_eq!(memory.trim(), (96u64 << 20).to_string());
    let weight = d.get("app", "/file?path=/sys/fs/cgroup/cpu.weight");
    let cpu = if weight.status == 200 {
        format!("weight:{}", weight.text().trim())
    } else {
        format!(
            "shares:{}",
            file(&d, "app", "/sys/fs/cgroup/cpu/cpu.shares").trim()
        )
    };
    assert!(["weight:20", "shares:512"].contains(&cpu.as_str()), "{cpu}");

    // /proc/sys and the cgroup view are mounted read-only.
    let mounts = file(&d, "app", "/proc/self/mounts");
    for target in ["/proc/sys", "/sys/fs/cgroup"] {
        let line = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(target))
            .unwrap_or_else(|| panic!("{target} is not mounted:\n{mounts}"));
        let options = line.split_whitespace().nth(3).unwrap_or_default();
        assert!(options.split(',').any(|o| o == "ro"), "{line}");
    }
    // The proxy says who called, RFC 7239 style, after what the client sent.
    let r = daemon::http(
        d.port,
        "app.localhost",
        "GET",
        "/headers",
        &[("forwarded", "for=192.0.2.60;proto=https")],
        b"",
    );
    let headers = r.text();
    let forwarded = headers
        .lines()
        .find_map(|l| l.strip_prefix("forwarded: "))
        .unwrap_or_else(|| panic!("no forwarded header:\n{headers}"));
    assert!(
        forwarded
            .starts_with("for=192.0.2.60;proto=https, for=127.0.0.1;host=app.localhost;proto=http"),
        "{forwarded}"
    );
    // stdin is at EOF (/dev/null), not a terminal or a pipe that never ends.
    assert_eq!(file(&d, "app", "/proc/self/fd/0"), "");
    let hostname = file(&d, "app", "/etc/hostname");
    assert!(hostname.starts_with("app-"), "{hostname}");
    let env = d.get("app", "/env").text();
    for want in [
        "PORT=8080",
        "K_SERVICE=app",
        "K_REVISION=app-00001",
        "K_CONFIGURATION=app",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing:\n{env}");
    }
}

/// The effective capability mask of the answering instance's app.
fn effective_caps(d: &Daemon, service: &str) -> u64 {
    let status = file(d, service, "/proc/self/status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff in {status}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn capabilities_dropped_are_gone_and_the_rest_stay() {
    let d = Daemon::start(&[]);
    d.deploy_hello("full", &["--user", "0:0"]);
    d.deploy_hello(
        "less",
        &["--user", "0:0", "--cap-drop", "NET_BIND_SERVICE,cap_chown"],
    );
    d.deploy_hello("none", &["--user", "0:0", "--cap-drop", "ALL"]);
    let full = effective_caps(&d, "full");
    let (chown, bind) = (1u64, 1u64 << 10);
    assert_eq!(full & (chown | bind), chown | bind, "{full:x}");
    assert_eq!(effective_caps(&d, "less"), full & !(chown | bind));
    assert_eq!(effective_caps(&d, "none"), 0);
    let spec = &d.json(&["describe", "less"])["revisions"][0]["spec"];
    assert_eq!(
        spec["cap_drop"],
        serde_json::json!(["NET_BIND_SERVICE", "CHOWN"])
    );
    let bad = d.cli(&["deploy", "less", "--cap-drop", "NET_RAWR"]);
    assert!(!bad.status.success());
    assert!(
        daemon::stderr(&bad).contains("NET_RAWR"),
        "{}",
        daemon::stderr(&bad)
    );
}
