//! The audit log (issue 18, item 3 in part): every control-plane write through the API is
//! recorded once answered, with who asked, what and the result, refused ones too; reads
//! are not; request bodies (a secret's value) are not; and the log survives a restart.

mod daemon;

use daemon::Daemon;

#[test]
fn every_write_is_recorded_with_its_result_and_nothing_of_its_body() {
    let mut d = Daemon::start(&[]);
    let value = "audit-value-51f0c3";
    d.deploy_hello("api", &[]);
    d.ok(&["ls"]);
    d.ok(&["describe", "api"]);
    d.ok(&[
        "secret",
        "create",
        "db",
        "--from-literal",
        &format!("k={value}"),
    ]);
    let refused = d.cli(&["secret", "create", "db", "--from-literal", "k=x"]);
    assert!(!refused.status.success());
    d.ok(&["rm", "api"]);

    let entries = d.json(&["audit"]);
    let lines: Vec<String> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} | {} | {}",
                e["who"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["result"].as_str().unwrap()
            )
        })
        .collect();
    let want = [
        "root (unix socket) | PATCH /v1/services/api | 200 OK",
        "root (unix socket) | PUT /v1/secrets/db | 200 OK",
        "root (unix socket) | PUT /v1/secrets/db | 409 Conflict",
        "root (unix socket) | DELETE /v1/services/api | 200 OK",
    ];
    assert_eq!(lines, want, "the audit log");
    assert!(!entries.to_string().contains(value), "{entries}");
    let table = d.ok(&["audit"]);
    assert!(table.contains("DELETE /v1/services/api"), "{table}");

    // It survives the daemon, and only the newest are read when asked.
    assert_eq!(d.stop(), Some(0));
    d.launch();
    let newest = d.json(&["audit", "--limit", "1"]);
    assert_eq!(newest.as_array().unwrap().len(), 1);
    assert_eq!(newest[0]["action"], "DELETE /v1/services/api");
}

#[test]
fn a_token_is_shown_once_and_kept_as_a_hash_only() {
    let mut d = Daemon::start(&[]);
    let token = d.ok(&[
        "token",
        "create",
        "ci",
        "--role",
        "developer",
        "--service",
        "api",
    ]);
    let token = token.trim().to_owned();
    assert!(token.starts_with("skiff_"), "{token}");
    let listed = d.json(&["token", "ls"]);
    assert_eq!(listed[0]["name"], "ci");
    assert_eq!(listed[0]["services"], serde_json::json!(["api"]));
    let bad = d.cli(&["token", "create", "other", "--role", "root"]);
    assert!(!bad.status.success() && daemon::stderr(&bad).contains("none of admin"));
    d.ok(&["token", "revoke", "ci"]);
    assert!(d.json(&["token", "ls"])[0]["revoked_at"].is_i64());
    let again = d.cli(&["token", "revoke", "ci"]);
    assert!(!again.status.success());
    let mut shown = listed.to_string();
    shown += &d.ok(&["token", "ls"]);
    shown += &d.ok(&["audit"]);
    assert_eq!(d.stop(), Some(0));
    let secret = token.rsplit('_').next().unwrap();
    assert!(!shown.contains(secret), "{shown}");
    let found = daemon::files_holding(d.home.path(), secret.as_bytes());
    assert!(found.is_empty(), "the token's secret in {found:?}");
}
