//! Private services end to end: `deploy --no-allow-unauthenticated` (and Knative's
//! `cluster-local`) keep a service off the open ingress. From outside, only a token that
//! may invoke it gets in; from inside, the services it names call it by name, and the app
//! learns who called in `X-Skiff-Caller`.

mod daemon;

use daemon::{http, Daemon};

/// A request to `service`'s `path` on the ingress with `Authorization: Bearer TOKEN`.
fn get_as(d: &Daemon, service: &str, path: &str, token: &str) -> daemon::Response {
    let auth = format!("Bearer {token}");
    let host = format!("{service}.localhost");
    http(d.port, &host, "GET", path, &[("authorization", &auth)], b"")
}

/// What `from`'s instance got calling `to` by name (hello's `/call`): the status line
/// and the body.
fn call(d: &Daemon, from: &str, to: &str, path: &str) -> String {
    let r = d.get(from, &format!("/call?to={to}&path={path}"));
    assert_eq!(r.status, 200, "{from} could not call {to}: {}", r.text());
    r.text()
}

#[test]
fn a_private_service_answers_invoker_tokens_and_the_services_it_names() {
    let d = Daemon::start(&[]);
    d.deploy_hello("front", &[]);
    d.deploy_hello("other", &[]);
    d.deploy_hello(
        "db",
        &["--no-allow-unauthenticated", "--allowed-callers", "front"],
    );
    let describe = d.ok(&["describe", "db"]);
    assert!(
        describe.contains("private (invoker tokens, and services front)"),
        "{describe}"
    );

    // From outside: 403 without a token, 401 with one that is none, 200 with an invoker
    // token for db, 403 with a token for another service or a viewer's.
    let r = d.get("db", "/");
    assert_eq!(r.status, 403, "{}", r.text());
    let r = get_as(&d, "db", "/", "skiff_000000000000_00");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    let invoker = d.token("ci", "invoker", &["db"]);
    let r = get_as(&d, "db", "/headers", &invoker);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.text();
    assert!(seen.contains("x-skiff-caller: token/ci\n"), "{seen}");
    assert!(
        !seen.contains(&invoker) && !seen.contains("authorization"),
        "the token reached the app: {seen}"
    );
    let elsewhere = d.token("ci-other", "invoker", &["other"]);
    assert_eq!(get_as(&d, "db", "/", &elsewhere).status, 403);
    let viewer = d.token("looker", "viewer", &[]);
    assert_eq!(get_as(&d, "db", "/", &viewer).status, 403);
    // A public service ignores tokens altogether.
    assert_eq!(d.get("other", "/").status, 200);

    // From inside, by name: front is let in and named; other is not.
    let answer = call(&d, "front", "db", "/headers");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-skiff-caller: service/front\n"),
        "{answer}"
    );
    let answer = call(&d, "other", "db", "/");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let answer = call(&d, "other", "db.svc.skiff.internal", "/");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // A revoked token is refused at once.
    d.ok(&["token", "revoke", "ci"]);
    assert_eq!(get_as(&d, "db", "/", &invoker).status, 401);

    // Every service may call; then public again.
    d.deploy_hello("db", &["--allowed-callers", "*"]);
    let answer = call(&d, "other", "db", "/");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(d.get("db", "/").status, 403);
    d.deploy_hello("db", &["--allow-unauthenticated"]);
    assert_eq!(d.get("db", "/").status, 200);
    assert!(d
        .ok(&["describe", "db"])
        .contains("public (anyone may call)"));
}

#[test]
fn knative_cluster_local_services_are_private_and_export_as_such() {
    let d = Daemon::start(&[]);
    d.deploy_hello("front", &[]);
    let yaml = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: inner\n  \
                labels:\n    networking.knative.dev/visibility: cluster-local\nspec:\n  template:\n    \
                spec:\n      containers:\n        - image: hello\n";
    let file = d.home.path().join("inner.yaml");
    std::fs::write(&file, yaml).unwrap();
    d.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(d.get("inner", "/").status, 403);
    // Knative's meaning: every service inside may call it.
    let answer = call(&d, "front", "inner", "/");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let exported = d.ok(&["export", "inner"]);
    assert!(
        exported.contains("networking.knative.dev/visibility: cluster-local")
            && exported.contains("skiff.dev/allowed-callers"),
        "{exported}"
    );
    std::fs::write(&file, &exported).unwrap();
    let out = d.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "service inner: unchanged", "{exported}");
}
