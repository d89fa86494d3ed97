//! The API over TCP with TLS (issue 18, item 3): the daemon makes its certificate, the
//! CLI reaches it with `--api --token --ca-file`; no token or a bad one is 401, a role or
//! service the token does not cover is 403, a revoked token is 401 from then on; and
//! the audit log lists each of these attempts.

mod daemon;

use daemon::{stderr, Daemon};
use std::process::{Command, Output};

struct Api<'a> {
    d: &'a Daemon,
    url: String,
    ca: String,
}

impl Api<'_> {
    fn as_token(&self, token: &str, args: &[&str]) -> Output {
        Command::new(daemon::skiff_bin())
            .args(["--home", self.d.home.path().to_str().unwrap()])
            .args(["--socket", "/nonexistent/no.sock"])
            .args(["--api", &self.url, "--token", token, "--ca-file", &self.ca])
            .args(args)
            .output()
            .unwrap()
    }

    fn curl(&self, path: &str, extra: &[&str]) -> String {
        let out = Command::new("curl")
            .args(["-s", "-i", "--cacert", &self.ca])
            .args(extra)
            .arg(format!("{}{path}", self.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn tokens_are_needed_and_roles_and_services_limit_them() {
    let d = Daemon::start(&["--api-listen", "127.0.0.1:0"]);
    let addr = d
        .api_tcp
        .clone()
        .expect("the TCP API's address in the ready line");
    let ca = d.home.path().join("api.crt");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.home.path().join("api.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    let api = Api {
        d: &d,
        url: format!("https://{addr}"),
        ca: ca.display().to_string(),
    };
    let admin = d.token("boss", "admin", &[]);
    let viewer = d.token("watcher", "viewer", &[]);
    let dev = d.token("dev-a", "developer", &["a"]);

    // No token, a made-up one.
    let none = api.curl("/v1/services", &[]);
    assert!(
        none.starts_with("HTTP/1.1 401") && none.contains("www-authenticate: Bearer"),
        "{none}"
    );
    let fake = api.as_token("skiff_000000000000_00", &["ls"]);
    assert!(
        !fake.status.success() && stderr(&fake).contains("the token is not valid"),
        "{}",
        stderr(&fake)
    );

    // A viewer reads, and may not deploy.
    assert!(api.as_token(&viewer, &["ls"]).status.success());
    let deploy = api.as_token(&viewer, &["deploy", "a", "--image", "hello"]);
    assert!(
        !deploy.status.success() && stderr(&deploy).contains("may not do this"),
        "{}",
        stderr(&deploy)
    );

    // A developer for service a deploys it, and nothing else; no secret values.
    let ok = api.as_token(&dev, &["deploy", "a", "--image", "hello"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    d.deploy_hello("b", &[]);
    for args in [
        &["logs", "b"][..],
        &["deploy", "b", "--image", "hello", "-e", "X=1"],
        &["secret", "create", "s", "--from-literal", "k=v"],
    ] {
        let out = api.as_token(&dev, args);
        assert!(
            !out.status.success() && stderr(&out).contains("may not do this"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(api.as_token(&dev, &["logs", "a"]).status.success());
    // Its list holds its service only; the viewer's (every service) both.
    let names = |token: &str| -> Vec<String> {
        let out = api.as_token(token, &["-o", "json", "ls"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&dev), ["a"]);
    assert_eq!(names(&viewer).len(), 2);

    // An admin manages tokens; a revoked token is refused from then on.
    assert!(api
        .as_token(&admin, &["token", "revoke", "dev-a"])
        .status
        .success());
    let revoked = api.as_token(&dev, &["ls"]);
    assert!(
        !revoked.status.success() && stderr(&revoked).contains("not valid"),
        "{}",
        stderr(&revoked)
    );

    let audit: Vec<String> = d
        .json(&["audit"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} | {} | {}",
                e["who"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                &e["result"].as_str().unwrap()[..3]
            )
        })
        .collect();
    for want in [
        "unauthenticated | GET /v1/services | 401",
        "invalid token | GET /v1/services | 401",
        "token watcher | PATCH /v1/services/a | 403",
        "token dev-a | PATCH /v1/services/a | 200",
        "token dev-a | GET /v1/services/b/logs | 403",
        "token dev-a | PATCH /v1/services/b | 403",
        "token dev-a | PUT /v1/secrets/s | 403",
        "token boss | DELETE /v1/tokens/dev-a | 200",
    ] {
        assert!(
            audit.iter().any(|l| l == want),
            "{want} not in the audit log:\n{}",
            audit.join("\n")
        );
    }
}

#[test]
fn a_certificate_given_is_served_in_place_of_one_made() {
    // Another daemon's certificate stands in for one an operator brings.
    let maker = Daemon::start(&["--api-listen", "127.0.0.1:0"]);
    let given = tempfile::tempdir().unwrap();
    let (cert, key) = (given.path().join("c.pem"), given.path().join("k.pem"));
    std::fs::copy(maker.home.path().join("api.crt"), &cert).unwrap();
    std::fs::copy(maker.home.path().join("api.key"), &key).unwrap();
    drop(maker);

    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let d = Daemon::start(&[
        "--api-listen",
        "127.0.0.1:0",
        "--api-cert",
        cert_s,
        "--api-key",
        key_s,
    ]);
    assert!(
        !d.home.path().join("api.crt").exists(),
        "a certificate was made anyway"
    );
    let api = Api {
        d: &d,
        url: format!("https://{}", d.api_tcp.clone().unwrap()),
        ca: cert_s.to_owned(),
    };
    let admin = d.token("boss", "admin", &[]);
    let out = api.as_token(&admin, &["ls"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A key that is not one: the daemon does not start, and says which file.
    std::fs::write(&key, "not a key").unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(daemon::skiff_bin())
        .args(["--home", home.path().to_str().unwrap()])
        .args(["--socket", home.path().join("s.sock").to_str().unwrap()])
        .args(["server", "--ingress", "127.0.0.1:0", "--no-registry"])
        .args(["--instance-subnet", "10.91.255.0/24"])
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--api-cert",
            cert_s,
            "--api-key",
            key_s,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains(key_s), "{}", stderr(&out));
}
