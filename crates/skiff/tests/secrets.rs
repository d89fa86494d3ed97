//! Secrets end to end (issue 18, item 1): `skiff secret` makes, versions, lists, disables
//! and removes them through the daemon; the key is made root-only at the first start;
//! no value is printed by any command, answered by the API, logged by the daemon, or
//! kept in clear anywhere in the data directory.

mod daemon;

use daemon::{files_holding, stderr, Daemon};
use std::os::unix::fs::PermissionsExt;

const FIRST: &str = "pg-first-4be1c09d";
const SECOND: &str = "pg-second-7f3a55e2";
const FROM_FILE: &str = "tls-key-material-91c0";

#[test]
fn secrets_are_kept_sealed_and_never_shown() {
    let mut d = Daemon::start_logging_to_file(&[]);
    let key = d.home.path().join("secrets.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file's mode");

    let tls = d
        .home
        .path()
        .join("..")
        .join(format!("tls-{}", std::process::id()));
    std::fs::write(&tls, FROM_FILE).unwrap();
    let mut printed = String::new();
    printed += &d.ok(&[
        "secret",
        "create",
        "db-pass",
        "--from-literal",
        &format!("password={FIRST}"),
        "--from-literal",
        "user=app",
        "--from-file",
        &format!("tls.key={}", tls.display()),
    ]);
    std::fs::remove_file(&tls).unwrap();
    printed += &d.ok(&[
        "secret",
        "add-version",
        "db-pass",
        "--from-literal",
        &format!("password={SECOND}"),
    ]);
    printed += &d.ok(&["secret", "versions", "db-pass"]);
    printed += &d.ok(&["secret", "ls"]);
    let detail = d.json(&["secret", "versions", "db-pass"]);
    printed += &detail.to_string();
    assert_eq!(detail["versions"][0]["version"], 2);
    assert_eq!(
        detail["versions"][1]["keys"],
        serde_json::json!(["password", "tls.key", "user"])
    );
    let listed = d.json(&["secret", "ls"]);
    printed += &listed.to_string();
    assert_eq!(listed[0]["latest"], 2);

    printed += &d.ok(&["secret", "disable", "db-pass", "2"]);
    assert_eq!(d.json(&["secret", "ls"])[0]["latest"], 1);
    assert_eq!(
        d.json(&["secret", "versions", "db-pass"])["versions"][0]["state"],
        "disabled"
    );
    for path in ["/v1/secrets", "/v1/secrets/db-pass"] {
        printed += &d.api("GET", path, "", "");
    }

    // Refusals say what is wrong without the value.
    let taken = d.cli(&[
        "secret",
        "create",
        "db-pass",
        "--from-literal",
        &format!("password={FIRST}"),
    ]);
    assert!(!taken.status.success());
    assert!(
        stderr(&taken).contains("exists already"),
        "{}",
        stderr(&taken)
    );
    let bad = d.api(
        "PUT",
        "/v1/secrets/other",
        "",
        &format!(r#"{{"data": {{"k": "{FIRST}!"}}}}"#),
    );
    assert!(
        bad.starts_with("HTTP/1.1 400") && bad.contains("data.k is not base64"),
        "{bad}"
    );
    let typed = d.api(
        "PUT",
        "/v1/secrets/other",
        "",
        r#"{"stringData": {"k": 4242424242}}"#,
    );
    assert!(
        typed.starts_with("HTTP/1.1 400") && !typed.contains("4242424242"),
        "{typed}"
    );
    printed += &bad;
    printed += &stderr(&taken);

    assert_eq!(d.stop(), Some(0));
    for value in [FIRST, SECOND, FROM_FILE] {
        assert!(!printed.contains(value), "{value} was shown:\n{printed}");
        let found = files_holding(d.home.path(), value.as_bytes());
        assert!(found.is_empty(), "{value} in clear in {found:?}");
    }
    let logged = std::fs::read_to_string(d.stderr_file()).unwrap();
    assert!(
        logged.contains("secret created"),
        "the daemon's log: {logged}"
    );

    // The key outlives the daemon: a new one opens what the old one sealed.
    d.launch();
    printed = d.ok(&["secret", "versions", "db-pass"]);
    assert!(printed.contains("disabled"), "{printed}");
    d.ok(&["secret", "rm", "db-pass"]);
    let gone = d.cli(&["secret", "versions", "db-pass"]);
    assert!(!gone.status.success() && stderr(&gone).contains("no such secret"));
}

#[test]
fn an_unusable_key_file_stops_the_daemon_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("operator.key");
    std::fs::write(&key, "0".repeat(64)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(daemon::skiff_bin())
        .args(["--home", other.path().to_str().unwrap()])
        .args(["--socket", other.path().join("s.sock").to_str().unwrap()])
        .args(["server", "--ingress", "127.0.0.1:0", "--no-registry"])
        .args(["--secrets-key-file", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let why = stderr(&out);
    assert!(
        why.contains("operator.key") && why.contains("chmod 600"),
        "{why}"
    );
}

const V1: &str = "env-one-0c7d21";
const V2: &str = "env-two-5a9e84";

fn app_env(d: &Daemon, service: &str) -> String {
    let r = d.get(service, "/env");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[test]
fn a_secret_as_env_reaches_the_app_and_latest_follows_new_versions() {
    let mut d = Daemon::start_logging_to_file(&[]);
    d.ok(&[
        "secret",
        "create",
        "db-pass",
        "--from-literal",
        &format!("password={V1}"),
    ]);
    d.ok(&[
        "secret",
        "create",
        "two-keys",
        "--from-literal",
        "a=1",
        "--from-literal",
        "b=2",
    ]);

    // What cannot resolve is refused at deploy, naming the secret and key.
    for (uses, says) in [
        ("X=missing:latest", "no such secret: missing"),
        ("X=db-pass/nokey:latest", "has no key nokey"),
        ("X=two-keys:latest", "name one, as two-keys/KEY"),
        ("X=db-pass:7", "has no version 7"),
        ("PORT=db-pass:latest", "PORT is set by skiff"),
    ] {
        let out = d.cli(&["deploy", "bad", "--image", "hello", "--set-secrets", uses]);
        assert!(!out.status.success(), "{uses} deployed");
        assert!(stderr(&out).contains(says), "{uses}: {}", stderr(&out));
    }

    d.deploy_hello(
        "api",
        &[
            "--idle-timeout",
            "1s",
            "--set-secrets",
            "DB_PASS=db-pass:latest,PINNED=db-pass/password:1,B=two-keys/b:latest",
        ],
    );
    let env = app_env(&d, "api");
    for want in [
        format!("DB_PASS={V1}"),
        format!("PINNED={V1}"),
        "B=2".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in:\n{env}");
    }

    // A new version reaches the next instance (the prepared one is made again); the
    // pinned use keeps its version.
    d.ok(&[
        "secret",
        "add-version",
        "db-pass",
        "--from-literal",
        &format!("password={V2}"),
    ]);
    daemon::eventually(
        std::time::Duration::from_secs(30),
        "api scaled to zero",
        || d.ready("api") == 0,
    );
    let env = app_env(&d, "api");
    assert!(env.lines().any(|l| l == format!("DB_PASS={V2}")), "{env}");
    assert!(env.lines().any(|l| l == format!("PINNED={V1}")), "{env}");

    // Used, it cannot be removed; its uses show as references only.
    let rm = d.cli(&["secret", "rm", "db-pass"]);
    assert!(
        !rm.status.success() && stderr(&rm).contains("used by revision"),
        "{}",
        stderr(&rm)
    );
    let mut shown = d.ok(&["describe", "api"]);
    shown += &d.json(&["describe", "api"]).to_string();
    shown += &d.api("GET", "/v1/services/api", "", "");
    assert!(shown.contains("DB_PASS=db-pass:latest"), "{shown}");
    let exported = d.ok(&["export", "api"]);
    assert!(
        exported.contains("secretKeyRef") && exported.contains("skiff.dev/secrets"),
        "{exported}"
    );
    shown += &exported;

    // Knative's secretKeyRef applies and serves.
    let yaml = d.home.path().join("knative.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: kn\nspec:\n  template:\n    spec:\n      containers:\n        - image: hello\n          env:\n            - name: FROM_REF\n              valueFrom:\n                secretKeyRef: {name: db-pass, key: password}\n          envFrom:\n            - prefix: TK_\n              secretRef: {name: two-keys}\n          volumeMounts:\n            - {name: keys, mountPath: /etc/two, readOnly: true}\n      volumes:\n        - name: keys\n          secret: {secretName: two-keys}\n",
    )
    .unwrap();
    d.ok(&["apply", "-f", yaml.to_str().unwrap()]);
    let env = app_env(&d, "kn");
    for want in [format!("FROM_REF={V2}"), "TK_a=1".into(), "TK_b=2".into()] {
        assert!(env.lines().any(|l| l == want), "{want} not in:\n{env}");
    }
    let b = d.get("kn", "/file?path=/etc/two/b");
    assert_eq!((b.status, b.text()), (200, "2".to_owned()));
    let exported = d.ok(&["export", "kn"]);
    for part in [
        "secretKeyRef",
        "envFrom",
        "secretName: two-keys",
        "mountPath: /etc/two",
    ] {
        assert!(exported.contains(part), "{part} not in:\n{exported}");
    }
    shown += &exported;
    std::fs::remove_file(&yaml).unwrap();

    // Taken out again: the next instance has no such variable.
    d.ok(&["deploy", "api", "--remove-secrets", "DB_PASS,PINNED"]);
    let env = app_env(&d, "api");
    assert!(!env.contains("DB_PASS=") && env.contains("B=2"), "{env}");
    d.ok(&["deploy", "api", "--clear-secrets"]);
    assert!(!app_env(&d, "api").contains("B=2"));

    assert_eq!(d.stop(), Some(0));
    for value in [V1, V2] {
        assert!(!shown.contains(value), "{value} shown:\n{shown}");
        let found = files_holding(d.home.path(), value.as_bytes());
        assert!(found.is_empty(), "{value} in clear in {found:?}");
    }
}

const F1: &str = "file-one-3d9b02";
const F2: &str = "file-two-e471ac";

fn app_file(d: &Daemon, service: &str, path: &str) -> (u16, String) {
    let r = d.get(service, &format!("/file?path={path}"));
    (r.status, r.text())
}

#[test]
fn secrets_as_files_are_read_only_owned_by_the_app_and_follow_new_versions() {
    let mut d = Daemon::start_logging_to_file(&[]);
    d.ok(&[
        "secret",
        "create",
        "db-pass",
        "--from-literal",
        &format!("password={F1}"),
    ]);
    d.ok(&[
        "secret",
        "create",
        "tls",
        "--from-literal",
        "crt=CERT",
        "--from-literal",
        "key=KEY",
    ]);
    d.deploy_hello(
        "files",
        &[
            "--min-instances",
            "1",
            "--set-secrets",
            "/secrets/db=db-pass/password:latest,/etc/tls/=tls:latest,/pinned/p=db-pass:1",
        ],
    );
    assert_eq!(app_file(&d, "files", "/secrets/db"), (200, F1.to_owned()));
    assert_eq!(app_file(&d, "files", "/pinned/p"), (200, F1.to_owned()));
    assert_eq!(
        app_file(&d, "files", "/etc/tls/crt"),
        (200, "CERT".to_owned())
    );
    assert_eq!(
        app_file(&d, "files", "/etc/tls/key"),
        (200, "KEY".to_owned())
    );
    let (_, mounts) = app_file(&d, "files", "/proc/self/mounts");
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/secrets"))
        .unwrap_or_else(|| panic!("/secrets is not a mount:\n{mounts}"));
    assert!(
        line.contains(" ro,") && line.contains("nosuid") && line.contains("noexec"),
        "{line}"
    );

    // A new version shows in the running instance's file, without a redeploy; the
    // pinned one stays; a key gone from a directory's secret goes from the directory.
    let instance = d.json(&["describe", "files"])["instances"][0]["id"].clone();
    d.ok(&[
        "secret",
        "add-version",
        "db-pass",
        "--from-literal",
        &format!("password={F2}"),
    ]);
    d.ok(&[
        "secret",
        "add-version",
        "tls",
        "--from-literal",
        "crt=CERT2",
    ]);
    daemon::eventually(
        std::time::Duration::from_secs(10),
        "the new version in the file",
        || app_file(&d, "files", "/secrets/db") == (200, F2.to_owned()),
    );
    assert_eq!(app_file(&d, "files", "/pinned/p"), (200, F1.to_owned()));
    assert_eq!(
        app_file(&d, "files", "/etc/tls/crt"),
        (200, "CERT2".to_owned())
    );
    assert_eq!(
        app_file(&d, "files", "/etc/tls/key").0,
        502,
        "a removed key's file stayed"
    );
    assert_eq!(
        d.json(&["describe", "files"])["instances"][0]["id"],
        instance,
        "the instance was replaced"
    );

    // A path under what the sandbox provides is refused at deploy.
    let out = d.cli(&[
        "deploy",
        "bad",
        "--image",
        "hello",
        "--set-secrets",
        "/proc/x=tls:1",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("under /proc"),
        "{}",
        stderr(&out)
    );

    assert_eq!(d.stop(), Some(0));
    for value in [F1, F2] {
        let found = files_holding(d.home.path(), value.as_bytes());
        assert!(found.is_empty(), "{value} in clear in {found:?}");
    }
}

#[test]
fn config_maps_reach_instances_and_a_replaced_one_reaches_their_files() {
    let d = Daemon::start(&[]);
    d.ok(&[
        "configmap",
        "create",
        "app",
        "--from-literal",
        "host=db.internal",
        "--from-literal",
        "mode=a",
    ]);
    assert_eq!(
        d.json(&["configmap", "describe", "app"])["data"]["host"],
        "db.internal"
    );
    let again = d.cli(&["configmap", "create", "app", "--from-literal", "host=x"]);
    assert!(!again.status.success() && stderr(&again).contains("exists already"));
    let missing = d.cli(&[
        "deploy",
        "bad",
        "--image",
        "hello",
        "--set-secrets",
        "X=configmap:nope/k",
    ]);
    assert!(
        stderr(&missing).contains("no such config map: nope"),
        "{}",
        stderr(&missing)
    );

    d.deploy_hello(
        "cfg",
        &[
            "--min-instances",
            "1",
            "--set-secrets",
            "HOST=configmap:app/host,/etc/app/=configmap:app",
        ],
    );
    assert!(app_env(&d, "cfg").lines().any(|l| l == "HOST=db.internal"));
    assert_eq!(app_file(&d, "cfg", "/etc/app/mode"), (200, "a".to_owned()));
    d.ok(&[
        "configmap",
        "update",
        "app",
        "--from-literal",
        "host=db2",
        "--from-literal",
        "mode=b",
    ]);
    daemon::eventually(
        std::time::Duration::from_secs(10),
        "the new mode in the file",
        || app_file(&d, "cfg", "/etc/app/mode") == (200, "b".to_owned()),
    );
    let rm = d.cli(&["configmap", "rm", "app"]);
    assert!(
        !rm.status.success() && stderr(&rm).contains("used by revision"),
        "{}",
        stderr(&rm)
    );
    d.ok(&["deploy", "cfg", "--clear-secrets"]);
    // Once the old revision has drained, nothing uses it.
    daemon::eventually(
        std::time::Duration::from_secs(30),
        "the config map removed",
        || d.cli(&["configmap", "rm", "app"]).status.success(),
    );
    assert!(d.json(&["configmap", "ls"]).as_array().unwrap().is_empty());
}
