//! User namespaces end to end: every instance runs in one of its own, root inside an
//! unprivileged host uid (no two live instances share a range); `--host-users` runs a
//! service with the host's ids.

mod daemon;

use daemon::Daemon;

/// The processes of instance `id` (its cgroup's), from the host's /proc.
fn pids_of(id: &str) -> Vec<u32> {
    let suffix = format!("/{id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.lines().any(|l| l.ends_with(&suffix)))
        })
        .collect()
}

/// The host uid that uid 0 of `service`'s running instance is, from /proc/PID/uid_map.
fn host_root_of(d: &Daemon, service: &str) -> (u32, u32) {
    let described = d.json(&["describe", service]);
    let id = described["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["state"] == "ready")
        .unwrap_or_else(|| panic!("no ready instance of {service}: {described}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pids = pids_of(&id);
    assert!(!pids.is_empty(), "no process in instance {id}'s cgroup");
    let map = std::fs::read_to_string(format!("/proc/{}/uid_map", pids[0])).unwrap();
    let fields: Vec<u32> = map.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(fields[0], 0, "{map}");
    (fields[1], fields[2])
}

#[test]
fn each_instance_has_a_user_namespace_of_its_own_unless_it_asks_for_host_ids() {
    let d = Daemon::start(&[]);
    d.deploy_hello("a", &[]);
    d.deploy_hello("b", &[]);
    let (a_root, a_len) = host_root_of(&d, "a");
    let (b_root, _) = host_root_of(&d, "b");
    assert!(a_root >= 1 << 29, "root inside is host uid {a_root}");
    assert_eq!(a_len, 65536);
    assert_ne!(a_root, b_root, "two instances share a range");
    // It serves as before, and its files are its own.
    let r = d.get("a", "/file?path=/etc/hostname");
    assert_eq!(r.status, 200, "{}", r.text());

    d.deploy_hello("b", &["--host-users"]);
    assert_eq!(host_root_of(&d, "b"), (0, u32::MAX));
    let spec = &d.json(&["describe", "b"])["revisions"][0]["spec"];
    assert_eq!(spec["host_users"], true, "{spec}");
    let yaml = d.ok(&["export", "b"]);
    assert!(yaml.contains("hostUsers: true"), "{yaml}");
}
