//! Secrets through the control plane over a real store: versions numbered and sealed,
//! `latest` meaning the newest enabled one, disabled versions kept but not opened, bad
//! names and data refused, and a ciphertext moved between rows refused. No value is in
//! an answer or in the database file.

mod fake;

use fake::Harness;
use skiff_control::secrets::{SecretAnswer, SecretCommand, SecretVersion};
use skiff_control::ControlError;
use skiff_secrets::SecretData;

fn data(pairs: &[(&str, &str)]) -> SecretData {
    let mut d = SecretData::new();
    for (k, v) in pairs {
        d.insert(k, v.as_bytes().to_vec());
    }
    d
}

async fn run(h: &Harness, c: SecretCommand) -> Result<SecretAnswer, ControlError> {
    h.ctl.execute_secret(c).await
}

fn value_of(h: &Harness, name: &str, version: SecretVersion, key: &str) -> String {
    let (_, d) = h.ctl.open_secret(name, version).unwrap();
    String::from_utf8(d.get(key).unwrap().to_vec()).unwrap()
}

/// Whether `needle` is anywhere in the data directory's files.
fn anywhere_in_home(h: &Harness, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![h.home().to_owned()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                dirs.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn versions_are_numbered_sealed_and_latest_skips_disabled_ones() {
    let h = Harness::new();
    let first = "first-value-6f1c2a";
    let second = "second-value-93be47";
    run(
        &h,
        SecretCommand::Create {
            name: "db-pass".into(),
            data: data(&[("password", first)]),
            services: vec![],
        },
    )
    .await
    .unwrap();
    let answer = run(
        &h,
        SecretCommand::AddVersion {
            name: "db-pass".into(),
            data: data(&[("password", second)]),
        },
    )
    .await
    .unwrap();
    let SecretAnswer::Secret(detail) = answer else {
        panic!("{answer:?}")
    };
    let shown = format!("{detail:?}");
    assert!(!shown.contains(first) && !shown.contains(second), "{shown}");
    assert_eq!(
        detail
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(detail.versions[0].keys, ["password"]);

    assert_eq!(
        value_of(&h, "db-pass", SecretVersion::Latest, "password"),
        second
    );
    assert_eq!(
        value_of(&h, "db-pass", SecretVersion::Number(1), "password"),
        first
    );

    run(
        &h,
        SecretCommand::SetEnabled {
            name: "db-pass".into(),
            version: 2,
            enabled: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        value_of(&h, "db-pass", SecretVersion::Latest, "password"),
        first
    );
    let e = h
        .ctl
        .open_secret("db-pass", SecretVersion::Number(2))
        .unwrap_err();
    assert!(e.to_string().contains("disabled"), "{e}");
    run(
        &h,
        SecretCommand::SetEnabled {
            name: "db-pass".into(),
            version: 1,
            enabled: false,
        },
    )
    .await
    .unwrap();
    let e = h
        .ctl
        .open_secret("db-pass", SecretVersion::Latest)
        .unwrap_err();
    assert!(e.to_string().contains("no enabled version"), "{e}");

    for value in [first, second] {
        let found = anywhere_in_home(&h, value.as_bytes());
        assert!(found.is_empty(), "{value} in clear in {found:?}");
    }

    run(
        &h,
        SecretCommand::Remove {
            name: "db-pass".into(),
        },
    )
    .await
    .unwrap();
    let e = h
        .ctl
        .open_secret("db-pass", SecretVersion::Latest)
        .unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e}");
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_does_not_open() {
    let h = Harness::new();
    for (name, value) in [("a", "value-of-a"), ("b", "value-of-b")] {
        run(
            &h,
            SecretCommand::Create {
                name: name.into(),
                data: data(&[("k", value)]),
                services: vec![],
            },
        )
        .await
        .unwrap();
    }
    run(
        &h,
        SecretCommand::AddVersion {
            name: "a".into(),
            data: data(&[("k", "a-two")]),
        },
    )
    .await
    .unwrap();
    let db = rusqlite::Connection::open(h.home().join("skiff.db")).unwrap();
    let copy = |from: (&str, u32), to: (&str, u32)| {
        db.execute(
            "UPDATE secret_versions SET
                 nonce = (SELECT nonce FROM secret_versions WHERE secret = ?1 AND version = ?2),
                 ciphertext = (SELECT ciphertext FROM secret_versions WHERE secret = ?1 AND version = ?2)
             WHERE secret = ?3 AND version = ?4",
            rusqlite::params![from.0, from.1, to.0, to.1],
        )
        .unwrap();
    };
    // b's version 1 over a's version 1 (another secret), a's 2 over its 1 (another version).
    copy(("b", 1), ("a", 1));
    let e = h
        .ctl
        .open_secret("a", SecretVersion::Number(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("secret a version 1 does not open"), "{e}");
    assert!(!e.contains("value-of"), "{e}");
    copy(("a", 2), ("b", 1));
    let e = h
        .ctl
        .open_secret("b", SecretVersion::Number(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not open"), "{e}");
    // A secret made again under the same name does not take the old rows' ciphertexts.
    let old: (Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT nonce, ciphertext FROM secret_versions WHERE secret = 'a' AND version = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    run(&h, SecretCommand::Remove { name: "a".into() })
        .await
        .unwrap();
    run(
        &h,
        SecretCommand::Create {
            name: "a".into(),
            data: data(&[("k", "new-1")]),
            services: vec![],
        },
    )
    .await
    .unwrap();
    run(
        &h,
        SecretCommand::AddVersion {
            name: "a".into(),
            data: data(&[("k", "new-2")]),
        },
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE secret_versions SET nonce = ?1, ciphertext = ?2 WHERE secret = 'a' AND version = 2",
        rusqlite::params![old.0, old.1],
    )
    .unwrap();
    assert!(h.ctl.open_secret("a", SecretVersion::Number(2)).is_err());
}

#[tokio::test]
async fn bad_names_keys_and_sizes_are_refused_and_names_are_taken_once() {
    let h = Harness::new();
    let refused = |c| async { run(&h, c).await.unwrap_err().to_string() };
    let e = refused(SecretCommand::Create {
        name: "DB".into(),
        data: data(&[("k", "v")]),
        services: vec![],
    })
    .await;
    assert!(e.contains("secret name \"DB\""), "{e}");
    let e = refused(SecretCommand::Create {
        name: "db".into(),
        data: data(&[("../k", "v")]),
        services: vec![],
    })
    .await;
    assert!(e.contains("secret key \"../k\""), "{e}");
    let e = refused(SecretCommand::Create {
        name: "db".into(),
        data: SecretData::new(),
        services: vec![],
    })
    .await;
    assert!(e.contains("at least one key"), "{e}");
    let big = "x".repeat(64 << 10);
    let e = refused(SecretCommand::Create {
        name: "db".into(),
        data: data(&[("a", &big), ("b", "y")]),
        services: vec![],
    })
    .await;
    assert!(e.contains("at most 65536"), "{e}");
    let e = refused(SecretCommand::AddVersion {
        name: "none".into(),
        data: data(&[("k", "v")]),
    })
    .await;
    assert!(e.contains("no such secret: none"), "{e}");
    run(
        &h,
        SecretCommand::Create {
            name: "db".into(),
            data: data(&[("k", "v")]),
            services: vec![],
        },
    )
    .await
    .unwrap();
    let e = refused(SecretCommand::Create {
        name: "db".into(),
        data: data(&[("k", "w")]),
        services: vec![],
    })
    .await;
    assert!(e.contains("exists already"), "{e}");
    let e = refused(SecretCommand::SetEnabled {
        name: "db".into(),
        version: 7,
        enabled: false,
    })
    .await;
    assert!(e.contains("no version 7"), "{e}");
    let SecretAnswer::Secrets(list) = run(&h, SecretCommand::List).await.unwrap() else {
        panic!()
    };
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].latest, list[0].versions), (Some(1), 1));
}

#[tokio::test]
async fn a_refused_name_is_quoted_as_given() {
    let h = Harness::new();
    let e = h
        .ctl
        .execute_config_map(skiff_control::configmaps::ConfigMapCommand::Put {
            name: "my_secret".into(),
            data: Default::default(),
            create_only: true,
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("config map name \"my_secret\""), "{e}");
    let e = h
        .ctl
        .execute_token(skiff_control::tokens::TokenCommand::Create {
            name: "my_service".into(),
            role: skiff_core::Role::Viewer,
            services: vec![],
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"my_service\" is not a token name"), "{e}");
}

#[tokio::test]
async fn a_secret_made_for_some_services_goes_to_those_only() {
    let h = Harness::new();
    run(
        &h,
        SecretCommand::Create {
            name: "db-pass".into(),
            data: data(&[("password", "p-51c0")]),
            services: vec!["api".into()],
        },
    )
    .await
    .unwrap();
    let SecretAnswer::Secrets(list) = run(&h, SecretCommand::List).await.unwrap() else {
        panic!("a list answers Secrets")
    };
    assert_eq!(list[0].services, ["api"]);
    let mut spec = skiff_core::ServiceSpec::new("app:1");
    spec.secrets = vec!["DB=db-pass:latest".parse().unwrap()];
    h.deploy("api", spec.clone()).await.unwrap();
    let e = h.deploy("web", spec).await.unwrap_err().to_string();
    assert!(
        e.contains("db-pass") && e.contains("api only") && e.contains("not to web"),
        "{e}"
    );
    let e = run(
        &h,
        SecretCommand::Create {
            name: "other".into(),
            data: data(&[("k", "v")]),
            services: vec!["Not A Service".into()],
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("Not A Service"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_prepared_while_a_version_is_added_is_made_again() {
    use fake::{until, Call};
    use std::time::Duration;
    let h = Harness::with(|c| c.prepare_sandboxes = true);
    let version = |value: &str| SecretCommand::AddVersion {
        name: "s".into(),
        data: data(&[("k", value)]),
    };
    let create = SecretCommand::Create {
        name: "s".into(),
        data: data(&[("k", "v1")]),
        services: vec![],
    };
    run(&h, create).await.unwrap();
    let mut spec = skiff_core::ServiceSpec::new("app:1");
    spec.secrets = vec!["V=s:latest".parse().unwrap()];
    spec.concurrency = 1;
    h.deploy("svc", spec).await.unwrap();
    // Its one slot taken, the revision keeps a sandbox prepared for the next instance.
    let _busy = h.pool("svc").acquire().await.unwrap();
    let prepares = |h: &Harness| -> Vec<String> {
        h.rt.calls()
            .into_iter()
            .filter_map(|(_, c)| match c {
                Call::Prepare(id) => Some(id),
                _ => None,
            })
            .collect()
    };
    let limit = Duration::from_secs(10);
    until(limit, "a sandbox prepared ahead", || {
        prepares(&h).len() >= 2
    })
    .await;
    // A new version makes the next sandbox again; it is held while being made, with v2.
    h.rt.hold_prepares(true);
    let before = prepares(&h).len();
    run(&h, version("v2")).await.unwrap();
    until(limit, "a sandbox being made with v2", || {
        prepares(&h).len() > before
    })
    .await;
    let held = prepares(&h).last().unwrap().clone();
    assert_eq!(h.rt.secret_env(&held), ["V=v2"]);
    // v3 comes while it is being made: once made, it must not stay with v2.
    run(&h, version("v3")).await.unwrap();
    h.rt.hold_prepares(false);
    until(limit, "a sandbox made again with v3", || {
        prepares(&h)
            .last()
            .is_some_and(|id| h.rt.secret_env(id) == ["V=v3"])
    })
    .await;
}
