//! End-to-end: Knative Service YAML. The samples under examples/knative apply to a real
//! daemon and serve; `export` then `apply` changes nothing (and rebuilds a removed
//! service as it was); a field skiff cannot honour is named and nothing is created.

mod daemon;

use daemon::{http, stderr, Daemon};
use std::path::PathBuf;

fn sample(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/knative")
        .join(name);
    p.to_str().unwrap().to_owned()
}

fn env_at(d: &Daemon, host: &str, key: &str) -> Option<String> {
    let r = http(d.port, host, "GET", "/env", &[], b"");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

/// Each revision's name, spec, share and tags (not its live autoscaler state).
fn revisions(detail: &serde_json::Value) -> Vec<serde_json::Value> {
    detail["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::json!([r["name"], r["spec"], r["percent"], r["tags"]]))
        .collect()
}

fn revision_count(d: &Daemon, service: &str) -> usize {
    d.json(&["describe", service])["revisions"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn the_samples_apply_serve_and_round_trip_through_export() {
    let d = Daemon::start(&[]);
    d.deploy_hello("canary", &[]);
    for file in [
        "hello.yaml",
        "autoscaled-api.yaml",
        "cloud-run.yaml",
        "canary.yaml",
    ] {
        let out = d.cli(&["apply", "-f", &sample(file)]);
        assert!(out.status.success(), "{file}: {}", stderr(&out));
    }
    assert_eq!(
        env_at(&d, "hello.localhost", "TARGET").as_deref(),
        Some("skiff")
    );
    // The API listens on 9090 after its entrypoint's argument made it wait 20 ms.
    assert_eq!(env_at(&d, "api.localhost", "PORT").as_deref(), Some("9090"));
    assert_eq!(
        env_at(&d, "frontend.localhost", "PORT").as_deref(),
        Some("8080")
    );
    let frontend = d.json(&["describe", "frontend"]);
    assert_eq!(frontend["revisions"][0]["spec"]["cpu_throttling"], true);
    // The canary: tags reach their revisions, the split holds.
    assert_eq!(d.revision_at("stable-canary.localhost"), "canary-00001");
    assert_eq!(d.revision_at("candidate-canary.localhost"), "canary-00002");
    let to_candidate = (0..100)
        .filter(|_| d.revision_at("canary.localhost") == "canary-00002")
        .count();
    assert!(
        (5..=15).contains(&to_candidate),
        "{to_candidate} of 100 to the 10 %"
    );

    for service in ["hello", "api", "frontend", "canary"] {
        let before = d.json(&["describe", service]);
        let yaml = d.ok(&["export", service]);
        let file = d.home.path().join(format!("{service}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        let out = d.ok(&["apply", "-f", file.to_str().unwrap()]);
        assert_eq!(
            out.trim(),
            format!("service {service}: unchanged"),
            "{yaml}"
        );
        let after = d.json(&["describe", service]);
        assert_eq!(revisions(&after), revisions(&before), "{service}");
        assert_eq!(after["traffic"], before["traffic"], "{service}");
    }

    // A removed service comes back from its export as it was.
    let yaml_file = d.home.path().join("api.yaml");
    let spec = d.json(&["describe", "api"])["revisions"][0]["spec"].clone();
    d.ok(&["rm", "api"]);
    let out = d.ok(&["apply", "-f", yaml_file.to_str().unwrap()]);
    assert!(
        out.contains("service api: revision api-00001 created"),
        "{out}"
    );
    assert_eq!(d.json(&["describe", "api"])["revisions"][0]["spec"], spec);
    assert_eq!(revision_count(&d, "api"), 1);
}

#[test]
fn an_unsupported_field_is_named_and_nothing_is_applied() {
    let d = Daemon::start(&[]);
    let file = d.home.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: ok\nspec:\n  template:\n    spec:\n      containers:\n        - image: hello\n---\napiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  template:\n    spec:\n      containers:\n        - image: hello\n          volumeMounts:\n            - name: data\n              mountPath: /data\n",
    )
    .unwrap();
    let out = d.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad.yaml") && err.contains("volumeMounts"),
        "{err}"
    );
    // Neither document was applied: the first one waits for the whole file to check.
    assert_eq!(d.json(&["ls"]).as_array().unwrap().len(), 0);

    // Safe-to-ignore fields are applied with a warning each.
    let out = d.cli(&["apply", "-f", &sample("cloud-run.yaml")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings = stderr(&out);
    for field in [
        "serviceAccountName",
        "metadata.annotations",
        "run.googleapis.com/ingress",
    ] {
        assert!(
            warnings.contains(field),
            "no warning naming {field}: {warnings}"
        );
    }
}

#[test]
fn a_named_revision_applies_once_exports_with_its_name_and_refuses_a_changed_template() {
    let d = Daemon::start(&[]);
    let doc = |greeting: &str| {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: named\n\
             spec:\n  template:\n    metadata:\n      name: named-blue\n    spec:\n      \
             containers:\n        - image: hello\n          env:\n            - name: GREETING\n              value: {greeting}\n"
        )
    };
    let file = d.home.path().join("named.yaml");
    std::fs::write(&file, doc("hi")).unwrap();
    let path = file.to_str().unwrap();
    assert!(d
        .ok(&["apply", "-f", path])
        .contains("revision named-blue created"));
    assert_eq!(
        d.ok(&["apply", "-f", path]).trim(),
        "service named: unchanged"
    );
    assert_eq!(revision_count(&d, "named"), 1);
    let exported = d.ok(&["export", "named"]);
    assert!(exported.contains("name: named-blue"), "{exported}");
    std::fs::write(&file, doc("changed")).unwrap();
    let out = d.cli(&["apply", "-f", path]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("revision named-blue exists already with another template"),
        "{}",
        stderr(&out)
    );
    assert_eq!(revision_count(&d, "named"), 1, "nothing was applied");
    assert_eq!(d.get("named", "/").status, 200);
}
