//! The samples under examples/knative convert; export then import gives back the same
//! spec and traffic; what skiff cannot honour is named, what it ignores is warned about.

use super::*;
use crate::{ServiceSpec, TrafficTarget};

const SAMPLES: [(&str, &str); 4] = [
    (
        "hello",
        include_str!("../../../../examples/knative/hello.yaml"),
    ),
    (
        "api",
        include_str!("../../../../examples/knative/autoscaled-api.yaml"),
    ),
    (
        "frontend",
        include_str!("../../../../examples/knative/cloud-run.yaml"),
    ),
    (
        "canary",
        include_str!("../../../../examples/knative/canary.yaml"),
    ),
];

fn one(text: &str) -> Result<Imported, String> {
    let mut docs = parse(text)?;
    assert_eq!(docs.len(), 1);
    import(docs.remove(0))
}

fn round_trip(name: &str, spec: &ServiceSpec, traffic: &[TrafficTarget]) -> Imported {
    let (doc, _) = document(name, spec, traffic);
    let yaml = serde_saphyr::to_string(&doc).unwrap();
    one(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

#[test]
fn every_sample_converts_and_round_trips() {
    for (name, text) in SAMPLES {
        let got = one(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.name, name);
        let back = round_trip(&got.name, &got.spec, &got.traffic);
        assert_eq!(back.spec, got.spec, "{name}");
        assert_eq!(back.traffic, got.traffic, "{name}");
    }
}

#[test]
fn the_autoscaled_sample_maps_every_knob() {
    let api = one(SAMPLES[1].1).unwrap();
    let s = &api.spec;
    assert_eq!((s.port, s.concurrency, s.timeout_ms), (9090, 10, 60_000));
    assert_eq!((s.memory_bytes, s.cpu_millis), (128 << 20, 500));
    assert_eq!((s.min_instances, s.max_instances), (1, 20));
    assert_eq!(s.idle_timeout_ms, 90_000);
    assert_eq!(s.entrypoint, ["/hello"]);
    assert_eq!(s.command, ["--listen-after", "20"]);
    assert_eq!(s.env, ["MODE=production", "LOG_LEVEL=info"]);
    let a = &s.autoscaling;
    assert_eq!(a.metric.as_deref(), Some("concurrency"));
    assert_eq!(
        (a.target, a.target_utilization_percentage),
        (Some(8.0), Some(80.0))
    );
    assert_eq!((a.window_ms, a.initial_scale), (Some(30_000), Some(1)));
    assert_eq!(
        (a.panic_window_percentage, a.panic_threshold_percentage),
        (Some(20.0), Some(150.0))
    );
    let ready = s.readiness_probe.as_ref().unwrap();
    assert_eq!(ready.http_path.as_deref(), Some("/healthz"));
    assert_eq!((ready.period_ms, ready.failure_threshold), (2000, 2));
    let live = s.liveness_probe.as_ref().unwrap();
    assert_eq!((live.period_ms, live.timeout_ms), (5000, 2000));
    assert!(
        api.warnings.iter().any(|w| w.contains("metadata.labels")),
        "{:?}",
        api.warnings
    );
    assert!(
        api.warnings.iter().any(|w| w.contains("requests.cpu")),
        "{:?}",
        api.warnings
    );
}

#[test]
fn cloud_run_spellings_and_throttling() {
    let f = one(SAMPLES[2].1).unwrap();
    assert!(f.spec.cpu_throttling);
    assert_eq!(f.spec.max_instances, 5, "maxScale");
    assert_eq!(f.spec.startup_probe.as_deref(), Some("/healthz"));
    assert_eq!(f.spec.liveness_probe.as_ref().unwrap().http_path, None);
    assert!(f.warnings.iter().any(|w| w.contains("serviceAccountName")));
    assert!(f
        .warnings
        .iter()
        .any(|w| w.contains("metadata.annotations")));
    let c = one(SAMPLES[3].1).unwrap();
    assert_eq!(
        c.traffic,
        [
            TrafficTarget {
                revision: Some("canary-00001".into()),
                percent: 90,
                tag: Some("stable".into())
            },
            TrafficTarget {
                revision: None,
                percent: 10,
                tag: Some("candidate".into())
            },
        ]
    );
}

fn with(extra_container_lines: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      containers:\n        - image: hello\n{extra_container_lines}"
    )
}

#[test]
fn unsupported_fields_are_named() {
    let cases = [
        (with("          volumeMounts:\n            - name: data\n              mountPath: /data\n"), "volumeMounts[0].name: no volume is named \"data\""),
        (with("          envFrom:\n            - configMapRef: {name: c}\n              secretRef: {name: s}\n"), "envFrom[0]: give one of secretRef and configMapRef"),
        (with("          volumeMounts:\n            - {name: s, mountPath: /s, subPath: k}\n      volumes:\n        - name: s\n          secret: {secretName: s}\n"), "subPath"),
        (with("          volumeMounts:\n            - {name: s, mountPath: /s}\n      volumes:\n        - name: s\n          hostPath: {path: /etc}\n"), "volumes[0].hostPath: only secret volumes are supported"),
        (with("          volumeMounts:\n            - {name: s, mountPath: /s}\n      volumes:\n        - name: s\n          secret:\n            secretName: s\n            items: [{key: a, path: a}, {key: b, path: b}]\n"), "items: skiff mounts every key"),
        (with("          env:\n            - name: K\n              valueFrom:\n                configMapKeyRef: {name: s, key: k, optional: true}\n"), "configMapKeyRef.optional"),
        (with("          env:\n            - name: K\n              valueFrom:\n                secretKeyRef: {name: s, key: k, optional: true}\n"), "secretKeyRef.optional"),
        (with("          env:\n            - name: K\n              valueFrom:\n                secretKeyRef: {name: S, key: k}\n"), "secret name \"S\""),
        (with("          env:\n            - name: K\n              valueFrom:\n                fieldRef: {fieldPath: metadata.name}\n"), "downward API"),
        (with("        - image: second\n"), "one container per revision, found 2"),
        (with("          resources:\n            limits:\n              nvidia.com/gpu: 1\n"), "limits.nvidia.com/gpu"),
        (with("          ports:\n            - containerPort: 8080\n              name: h2c\n"), "HTTP/2 cleartext is not supported yet"),
        (with("          ports:\n            - containerPort: 8080\n              name: web\n"), "name \"web\": Knative names the serving port http1"),
        (with("          livenessProbe:\n            exec: {command: []}\n"), "exec.command: give a command"),
        (with("          livenessProbe:\n            exec: {command: [\"true\"]}\n            tcpSocket: {}\n"), "exactly one of httpGet, tcpSocket and exec"),
        (with("          readinessProbe:\n            httpGet: {path: /, port: 9999}\n"), "readinessProbe.port"),
    ];
    for (text, names) in cases {
        let err = parse(&text)
            .and_then(|mut d| import(d.remove(0)))
            .unwrap_err();
        assert!(err.contains(names), "{names}: {err}");
    }
    let scale = with("").replace(
        "    spec:\n      containers",
        "    metadata:\n      annotations:\n        autoscaling.knative.dev/activation-scale: \"2\"\n    spec:\n      containers",
    );
    let err = one(&scale).unwrap_err();
    assert!(err.contains("activation-scale"), "{err}");
    let err = one(&with("").replace("Service", "Route")).unwrap_err();
    assert!(err.contains("not a Knative Service"), "{err}");
}

#[test]
fn durations_read_as_kubernetes_writes_them() {
    use duration_text::{format_ms, parse_ms};
    assert_eq!(parse_ms("1m30s"), Ok(90_000));
    assert_eq!(parse_ms("500ms"), Ok(500));
    assert_eq!(parse_ms("1h"), Ok(3_600_000));
    assert!(parse_ms("").is_err() && parse_ms("10").is_err() && parse_ms("5d").is_err());
    assert_eq!(
        (format_ms(60_000), format_ms(1500)),
        ("60s".into(), "1500ms".into())
    );
}

#[test]
fn working_dir_is_read_and_written_back() {
    let imported = one(&with("          workingDir: /srv/app\n")).unwrap();
    assert_eq!(imported.spec.working_dir.as_deref(), Some("/srv/app"));
    let back = round_trip("hello", &imported.spec, &imported.traffic);
    assert_eq!(back.spec.working_dir.as_deref(), Some("/srv/app"));
}

#[test]
fn a_readiness_period_of_zero_is_knatives_fast_probing() {
    let imported =
        one(&with("          readinessProbe:\n            httpGet: {path: /ready}\n            periodSeconds: 0\n"))
            .unwrap();
    let p = imported.spec.readiness_probe.unwrap();
    assert_eq!(p.http_path.as_deref(), Some("/ready"));
    assert_eq!(
        p.period_ms,
        crate::Probe::new(None).period_ms,
        "the default period"
    );
    let err = one(&with(
        "          livenessProbe:\n            httpGet: {path: /live}\n            periodSeconds: 0\n",
    ))
    .unwrap_err();
    assert!(err.contains("livenessProbe"), "{err}");
}

#[test]
fn a_template_name_is_the_revisions_and_must_start_with_the_service() {
    let named = with("").replace(
        "  template:\n    spec:",
        "  template:\n    metadata:\n      name: x-blue\n    spec:",
    );
    assert_eq!(
        one(&named).unwrap().revision_name.as_deref(),
        Some("x-blue")
    );
    let foreign = named.replace("x-blue", "y-blue");
    let err = one(&foreign).unwrap_err();
    assert!(
        err.contains("spec.template.metadata.name") && err.contains("y-blue"),
        "{err}"
    );
}

#[test]
fn capabilities_are_dropped_and_added_only_from_the_default_set() {
    let doc = with(
        "          securityContext:\n            capabilities: {drop: [ALL, cap_net_raw], add: [NET_BIND_SERVICE]}\n",
    );
    let imported = one(&doc).unwrap();
    assert_eq!(imported.spec.cap_drop, ["ALL", "NET_RAW"]);
    let back = round_trip("x", &imported.spec, &imported.traffic);
    assert_eq!(
        back.spec.cap_drop, imported.spec.cap_drop,
        "export writes the drops"
    );
}

#[test]
fn a_security_context_is_honoured_or_refused_by_name() {
    let sc = |lines: &str| with(&format!("          securityContext:\n{lines}"));
    let imported = one(&sc(
        "            runAsUser: 1000\n            runAsGroup: 2000\n            runAsNonRoot: true\n            readOnlyRootFilesystem: true\n            allowPrivilegeEscalation: false\n            seccompProfile: {type: RuntimeDefault}\n",
    ))
    .unwrap();
    let s = &imported.spec;
    assert_eq!(s.user.as_deref(), Some("1000:2000"));
    assert!(s.run_as_non_root && s.read_only);
    let back = round_trip("x", s, &imported.traffic);
    assert_eq!(back.spec, *s, "export writes it back");
    for (lines, named) in [
        (
            "            capabilities: {add: [SYS_ADMIN]}\n",
            "capabilities.add: \"SYS_ADMIN\"",
        ),
        (
            "            capabilities: {drop: [NOT_A_CAP]}\n",
            "capabilities.drop: \"NOT_A_CAP\"",
        ),
        (
            "            allowPrivilegeEscalation: true\n",
            "allowPrivilegeEscalation true",
        ),
        (
            "            runAsGroup: 5\n",
            "runAsGroup without runAsUser",
        ),
        (
            "            seccompProfile: {type: Unconfined}\n",
            "seccompProfile",
        ),
    ] {
        let err = one(&sc(lines)).unwrap_err();
        assert!(err.contains(named), "{named}: {err}");
    }
}

#[test]
fn a_user_by_name_and_a_service_without_init_round_trip_as_annotations() {
    let mut spec = ServiceSpec::new("hello");
    spec.user = Some("www-data".into());
    spec.init = false;
    let back = round_trip("x", &spec, &crate::default_traffic());
    assert_eq!(back.spec, spec);
}

fn annotated(lines: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  template:\n    metadata:\n      annotations:\n{lines}    spec:\n      containers:\n        - image: hello\n"
    )
}

#[test]
fn egress_round_trips_as_annotations() {
    let mut spec = ServiceSpec::new("hello");
    spec.egress = crate::EgressMode::None;
    spec.egress_allow =
        crate::parse_egress_rules("10.0.0.0/8:5432,host.skiff.internal:6379").unwrap();
    let back = round_trip("x", &spec, &crate::default_traffic());
    assert_eq!(back.spec, spec);
    let read = one(&annotated(
        "        skiff.dev/egress: all\n        skiff.dev/egress-allow: \"192.168.0.0/16\"\n",
    ))
    .unwrap();
    assert_eq!(read.spec.egress_allow[0].to_string(), "192.168.0.0/16");
    let bad = one(&annotated("        skiff.dev/egress-allow: \"db:5432\"\n")).unwrap_err();
    assert!(
        bad.contains("skiff.dev/egress-allow") && bad.contains("IPv4"),
        "{bad}"
    );
}

#[test]
fn secrets_round_trip_as_secret_key_refs_and_an_annotation() {
    let mut spec = ServiceSpec::new("hello");
    spec.env = vec!["MODE=a".into()];
    spec.secrets = [
        "DB_PASS=db/password:latest",
        "PINNED=db/password:2",
        "ONE=token:latest",
    ]
    .iter()
    .map(|u| u.parse().unwrap())
    .collect();
    let (doc, _) = document("x", &spec, &crate::default_traffic());
    let yaml = serde_saphyr::to_string(&doc).unwrap();
    assert!(yaml.contains("secretKeyRef"), "{yaml}");
    assert!(
        yaml.contains("skiff.dev/secrets: PINNED=db/password:2,ONE=token:latest"),
        "{yaml}"
    );
    let back = round_trip("x", &spec, &crate::default_traffic());
    assert_eq!(back.spec, spec);
    // In the order import reads them: env, envFrom, volume mounts, the annotation.
    spec.secrets = [
        "DB_PASS=db/password:latest",
        "DB_*=db:latest",
        "/etc/tls/=tls:latest",
        "/secrets/token=api/token:latest",
        "PINNED=db/password:2",
        "/pinned/=tls:3",
    ]
    .iter()
    .map(|u| u.parse().unwrap())
    .collect();
    let (doc, _) = document("x", &spec, &crate::default_traffic());
    let yaml = serde_saphyr::to_string(&doc).unwrap();
    for part in [
        "envFrom",
        "prefix: DB_",
        "secretName: tls",
        "mountPath: /etc/tls",
        "key: token",
    ] {
        assert!(yaml.contains(part), "{part} not in:\n{yaml}");
    }
    assert_eq!(round_trip("x", &spec, &crate::default_traffic()).spec, spec);
    // Config maps, in the same three forms.
    spec.secrets = [
        "HOST=configmap:app/host",
        "APP_*=configmap:app",
        "/etc/app/=configmap:app",
    ]
    .iter()
    .map(|u| u.parse().unwrap())
    .collect();
    let (doc, _) = document("x", &spec, &crate::default_traffic());
    let yaml = serde_saphyr::to_string(&doc).unwrap();
    for part in ["configMapKeyRef", "configMapRef", "configMap:"] {
        assert!(yaml.contains(part), "{part} not in:\n{yaml}");
    }
    assert_eq!(round_trip("x", &spec, &crate::default_traffic()).spec, spec);
    let knative = one(&with(
        "          env:\n            - name: K\n              valueFrom:\n                secretKeyRef: {name: s, key: k}\n",
    ))
    .unwrap();
    assert_eq!(knative.spec.secrets[0].to_string(), "K=s/k:latest");
    assert!(knative.spec.env.is_empty());
}

#[test]
fn cloud_run_egress_annotations_are_refused_with_what_to_use() {
    for key in [
        "run.googleapis.com/cloudsql-instances",
        "run.googleapis.com/vpc-access-connector",
        "run.googleapis.com/vpc-access-egress",
        "run.googleapis.com/network-interfaces",
    ] {
        let err = one(&annotated(&format!("        {key}: \"x\"\n"))).unwrap_err();
        assert!(
            err.contains(key) && err.contains("skiff.dev/egress"),
            "{key}: {err}"
        );
    }
}

#[test]
fn exec_probes_are_read_and_written_back() {
    let doc = with(
        "          livenessProbe:\n            exec:\n              command: [cat, /tmp/healthy]\n            periodSeconds: 5\n",
    );
    let imported = one(&doc).unwrap();
    let probe = imported.spec.liveness_probe.clone().unwrap();
    assert_eq!(probe.exec, ["cat", "/tmp/healthy"]);
    assert_eq!(probe.period_ms, 5000);
    let back = round_trip("x", &imported.spec, &imported.traffic);
    assert_eq!(back.spec, imported.spec);
    let mut no_init = imported.spec.clone();
    no_init.init = false;
    let err = no_init.validate().unwrap_err().to_string();
    assert!(
        err.contains("exec probes run through skiff's init"),
        "{err}"
    );
}

#[test]
fn cluster_local_is_a_private_service_callable_by_the_services_named() {
    let doc = |labels: &str, annotations: &str| {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: x\n  labels:\n{labels}spec:\n  template:\n    metadata:\n      annotations:\n        a: b\n{annotations}    spec:\n      containers:\n        - image: hello\n"
        )
    };
    let local = "    networking.knative.dev/visibility: cluster-local\n";
    // Knative's meaning: every service inside may call it.
    let read = one(&doc(local, "")).unwrap();
    assert!(!read.spec.allow_unauthenticated);
    assert_eq!(read.spec.allowed_callers, ["*"]);
    let read = one(&doc(
        local,
        "        skiff.dev/allowed-callers: \"front, batch\"\n",
    ))
    .unwrap();
    assert_eq!(read.spec.allowed_callers, ["front", "batch"]);
    let read = one(&doc("    app: x\n", "")).unwrap();
    assert!(read.spec.allow_unauthenticated);
    assert!(read.warnings.iter().any(|w| w.contains("labels[\"app\"]")));
    let bad = one(&doc(
        "    networking.knative.dev/visibility: internal\n",
        "",
    ))
    .unwrap_err();
    assert!(
        bad.contains("visibility") && bad.contains("internal"),
        "{bad}"
    );

    // Round trips, "none but tokens" included.
    for callers in [vec![], vec!["*".to_string()], vec!["front".into()]] {
        let mut spec = ServiceSpec::new("hello");
        spec.allow_unauthenticated = false;
        spec.allowed_callers = callers;
        let back = round_trip("x", &spec, &crate::default_traffic());
        assert_eq!(back.spec, spec);
    }
    let (exported, _) = export::document("x", &ServiceSpec::new("hello"), &[]);
    assert!(exported.metadata.labels.is_empty());
    assert!(exported.spec.template.spec.host_users.is_none());
}

#[test]
fn delivery_settings_round_trip_as_annotations() {
    let mut spec = ServiceSpec::new("hello");
    spec.delivery = crate::Delivery {
        retries: Some(5),
        backoff_policy: Some("linear".into()),
        backoff_delay_ms: Some(250),
        timeout_ms: Some(10_000),
        dead_letter: Some("failures/hello".into()),
        max_in_flight: Some(4),
        max_per_second: Some(50),
        max_age_ms: Some(3_600_000),
    };
    let back = round_trip("x", &spec, &crate::default_traffic());
    assert_eq!(back.spec.delivery, spec.delivery);
    let bad = one(&annotated("        skiff.dev/backoff-policy: cubic\n")).unwrap_err();
    assert!(bad.contains("backoff-policy"), "{bad}");
}

#[test]
fn host_users_round_trip_as_kubernetes_says_them() {
    let mut spec = ServiceSpec::new("hello");
    spec.host_users = true;
    let back = round_trip("x", &spec, &crate::default_traffic());
    assert!(back.spec.host_users);
    let read = one(&with("")).unwrap();
    assert!(!read.spec.host_users);
}
