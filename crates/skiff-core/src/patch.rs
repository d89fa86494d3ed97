//! An update of a service as `skiff deploy` sends it: only the fields it changes. The
//! daemon applies it to the latest revision's spec (as `gcloud run deploy` does), so the
//! read and the write happen in one place, under one lock, and a removal in between
//! cannot be undone by a client writing back what it read before.

use crate::{Autoscaling, EgressMode, EgressRule, Probe, SecretTarget, SecretUse, ServiceSpec};
use serde::{Deserialize, Serialize};

/// The fields of a spec to change; unset ones keep the latest revision's value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Replaces the whole list (gcloud's `--set-env-vars`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `KEY=VALUE` entries set over the list: a key there already gets the new value in
    /// its place, a new one goes at the end (`--update-env-vars`, `-e`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub update_env: Vec<String>,
    /// Keys taken out of the list (`--remove-env-vars`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<String>,
    /// Replaces the image's Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_throttling: Option<bool>,
    /// An absolute path; empty: back to the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The user to run as; empty: back to the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Mount the root filesystem read-only (`--read-only`) or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Run the app under skiff's init (`--init`) or as PID 1 itself (`--no-init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Replaces the capabilities dropped (`--cap-drop`); empty: none dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_drop: Option<Vec<String>>,
    /// Whether instances reach public addresses (`--egress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressMode>,
    /// Replaces the allowed destinations (`--egress-allow`); empty clears them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_allow: Option<Vec<EgressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ProbePatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<ProbePatch>,
    /// Knobs set here override the latest revision's; unset ones stay.
    #[serde(default, skip_serializing_if = "Autoscaling::is_default")]
    pub autoscaling: Autoscaling,
    /// Replaces every secret the service uses (`--set-secrets`; empty: `--clear-secrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<SecretUse>>,
    /// Secrets set over the list, replacing one of the same target (`--update-secrets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub update_secrets: Vec<SecretUse>,
    /// Targets (variable names or paths) whose secrets are taken out (`--remove-secrets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_secrets: Vec<String>,
    /// Anyone may call (`--allow-unauthenticated`), or only tokens and allowed callers
    /// (`--no-allow-unauthenticated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated: Option<bool>,
    /// Replaces the services that may call it when private (`--allowed-callers`); empty
    /// clears them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_callers: Option<Vec<String>>,
    /// Host ids (`--host-users`) or a user namespace of its own (`--no-host-users`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_users: Option<bool>,
    /// Delivery knobs set here override the latest revision's; unset ones stay.
    #[serde(default, skip_serializing_if = "crate::Delivery::is_default")]
    pub delivery: crate::Delivery,
}

/// A change to a readiness or liveness probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbePatch {
    /// A new probe: an HTTP path, `tcp` for a connect to the port, or `exec:COMMAND ARGS`
    /// for a command run inside the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

/// Why a patch does not apply; `field` as the CLI flag names it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct PatchError {
    pub field: &'static str,
    pub why: String,
}

impl SpecPatch {
    /// The spec `base` (the latest revision's; `None` for a new service) with this
    /// patch applied. A new service needs an image.
    pub fn apply(
        &self,
        service: &str,
        base: Option<ServiceSpec>,
    ) -> Result<ServiceSpec, PatchError> {
        let mut spec = match (base, &self.image) {
            (Some(spec), _) => spec,
            (None, Some(image)) => ServiceSpec::new(image.clone()),
            (None, None) => {
                return Err(PatchError {
                    field: "image",
                    why: format!(
                        "service {service} does not exist yet: --image is required to create it"
                    ),
                })
            }
        };
        set(&mut spec.image, &self.image);
        set(&mut spec.port, &self.port);
        self.apply_env(&mut spec.env)?;
        self.apply_secrets(&mut spec.secrets)?;
        set(&mut spec.memory_bytes, &self.memory_bytes);
        set(&mut spec.cpu_millis, &self.cpu_millis);
        set(&mut spec.concurrency, &self.concurrency);
        set(&mut spec.min_instances, &self.min_instances);
        set(&mut spec.max_instances, &self.max_instances);
        set(&mut spec.timeout_ms, &self.timeout_ms);
        set(&mut spec.idle_timeout_ms, &self.idle_timeout_ms);
        set(&mut spec.command, &self.command);
        set(&mut spec.cpu_throttling, &self.cpu_throttling);
        set(&mut spec.init, &self.init);
        set(&mut spec.read_only, &self.read_only);
        if let Some(caps) = &self.cap_drop {
            spec.cap_drop = caps
                .iter()
                .map(|c| crate::canonical_capability(c).unwrap_or_else(|| c.clone()))
                .collect();
        }
        set(&mut spec.egress, &self.egress);
        set(&mut spec.egress_allow, &self.egress_allow);
        set(&mut spec.allow_unauthenticated, &self.allow_unauthenticated);
        set(&mut spec.allowed_callers, &self.allowed_callers);
        set(&mut spec.host_users, &self.host_users);
        spec.delivery = spec.delivery.merged(&self.delivery);
        if let Some(user) = &self.user {
            spec.user = (!user.is_empty()).then(|| user.clone());
        }
        if self.startup_probe.is_some() {
            spec.startup_probe = self.startup_probe.clone();
        }
        if let Some(dir) = &self.working_dir {
            spec.working_dir = (!dir.is_empty()).then(|| dir.clone());
        }
        apply_probe(
            "readiness",
            &mut spec.readiness_probe,
            &self.readiness_probe,
        )?;
        apply_probe("liveness", &mut spec.liveness_probe, &self.liveness_probe)?;
        overlay(&mut spec.autoscaling, &self.autoscaling);
        Ok(spec)
    }
}

impl SpecPatch {
    /// The secrets: replaced (`secrets`), or edited by target.
    fn apply_secrets(&self, uses: &mut Vec<SecretUse>) -> Result<(), PatchError> {
        let editing = !self.update_secrets.is_empty() || !self.remove_secrets.is_empty();
        if self.secrets.is_some() && editing {
            return Err(PatchError {
                field: "secrets",
                why: "--set-secrets (or --clear-secrets) replaces every secret: it does not \
                      go with --update-secrets or --remove-secrets"
                    .into(),
            });
        }
        if let Some(all) = &self.secrets {
            uses.clone_from(all);
        }
        // A target as `--remove-secrets` names it: `NAME`, `/path` or `/dir/`.
        let target = |u: &SecretUse| match &u.target {
            SecretTarget::Env(n) | SecretTarget::File(n) => n.clone(),
            SecretTarget::Dir(d) => format!("{d}/"),
            SecretTarget::EnvAll(prefix) => format!("{prefix}*"),
        };
        let removed: std::collections::HashSet<&str> =
            self.remove_secrets.iter().map(String::as_str).collect();
        uses.retain(|u| !removed.contains(target(u).as_str()));
        for new in &self.update_secrets {
            match uses.iter_mut().find(|u| target(u) == target(new)) {
                Some(old) => *old = new.clone(),
                None => uses.push(new.clone()),
            }
        }
        Ok(())
    }

    /// The environment: replaced (`env`), or edited key by key (`update_env`,
    /// `remove_env`); the two ways do not go together, as in gcloud.
    fn apply_env(&self, env: &mut Vec<String>) -> Result<(), PatchError> {
        let editing = !self.update_env.is_empty() || !self.remove_env.is_empty();
        if self.env.is_some() && editing {
            return Err(PatchError {
                field: "env",
                why: "--set-env-vars replaces the whole environment: it does not go with \
                      --update-env-vars or --remove-env-vars"
                    .into(),
            });
        }
        if let Some(all) = &self.env {
            *env = all.clone();
        }
        // Linear in the sizes of the list and the patch (a quadratic merge of a large
        // request blocked the daemon for minutes): index the keys once.
        let key = |kv: &str| kv.split('=').next().unwrap_or_default().to_owned();
        let removed: std::collections::HashSet<&str> =
            self.remove_env.iter().map(String::as_str).collect();
        env.retain(|kv| !removed.contains(key(kv).as_str()));
        let mut at: std::collections::HashMap<String, usize> =
            env.iter().enumerate().map(|(i, kv)| (key(kv), i)).collect();
        for kv in &self.update_env {
            match at.get(&key(kv)) {
                Some(&i) => env[i].clone_from(kv),
                None => {
                    at.insert(key(kv), env.len());
                    env.push(kv.clone());
                }
            }
        }
        Ok(())
    }
}

fn set<T: Clone>(field: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *field = v.clone();
    }
}

fn apply_probe(
    name: &'static str,
    probe: &mut Option<Probe>,
    patch: &Option<ProbePatch>,
) -> Result<(), PatchError> {
    let Some(patch) = patch else {
        return Ok(());
    };
    if probe.is_none()
        && patch.kind.is_none()
        && (patch.period_ms.is_some() || patch.failure_threshold.is_some())
    {
        return Err(PatchError {
            field: if name == "readiness" {
                "readiness-probe"
            } else {
                "liveness-probe"
            },
            why: format!("--{name}-period and --{name}-failures need --{name}-probe"),
        });
    }
    if let Some(kind) = &patch.kind {
        *probe = Some(match kind.strip_prefix("exec:") {
            Some(command) => Probe::exec(command.split_whitespace().map(str::to_owned).collect()),
            None => Probe::new((kind != "tcp").then(|| kind.clone())),
        });
    }
    if let Some(p) = probe.as_mut() {
        if let Some(period) = patch.period_ms {
            p.period_ms = period;
            p.timeout_ms = p.timeout_ms.min(period);
        }
        set(&mut p.failure_threshold, &patch.failure_threshold);
    }
    Ok(())
}

fn overlay(a: &mut Autoscaling, p: &Autoscaling) {
    if p.metric.is_some() {
        a.metric = p.metric.clone();
    }
    a.target = p.target.or(a.target);
    a.target_utilization_percentage = p
        .target_utilization_percentage
        .or(a.target_utilization_percentage);
    a.window_ms = p.window_ms.or(a.window_ms);
    a.panic_window_percentage = p.panic_window_percentage.or(a.panic_window_percentage);
    a.panic_threshold_percentage = p
        .panic_threshold_percentage
        .or(a.panic_threshold_percentage);
    a.max_scale_up_rate = p.max_scale_up_rate.or(a.max_scale_up_rate);
    a.max_scale_down_rate = p.max_scale_down_rate.or(a.max_scale_down_rate);
    a.scale_to_zero_grace_ms = p.scale_to_zero_grace_ms.or(a.scale_to_zero_grace_ms);
    a.initial_scale = p.initial_scale.or(a.initial_scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_service_needs_an_image() {
        let err = SpecPatch::default().apply("web", None).unwrap_err();
        assert_eq!(err.field, "image");
        assert!(err.why.contains("service web does not exist yet"), "{err}");
        let spec = SpecPatch {
            image: Some("hello".into()),
            port: Some(9000),
            ..Default::default()
        }
        .apply("web", None)
        .unwrap();
        assert_eq!((spec.image.as_str(), spec.port), ("hello", 9000));
    }

    #[test]
    fn unset_fields_keep_the_base_and_set_ones_replace_it() {
        let mut base = ServiceSpec::new("app:1");
        base.env = vec!["A=1".into()];
        base.concurrency = 7;
        base.autoscaling.window_ms = Some(20_000);
        let patch = SpecPatch {
            env: Some(vec!["B=2".into()]),
            autoscaling: Autoscaling {
                target: Some(5.0),
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = patch.apply("web", Some(base.clone())).unwrap();
        assert_eq!(spec.env, ["B=2"], "env replaces the list");
        assert_eq!(spec.concurrency, 7);
        assert_eq!(spec.image, "app:1");
        assert_eq!(spec.autoscaling.window_ms, Some(20_000));
        assert_eq!(spec.autoscaling.target, Some(5.0));
        assert_eq!(
            SpecPatch::default()
                .apply("web", Some(base.clone()))
                .unwrap(),
            base
        );
    }

    #[test]
    fn probes_are_made_tuned_and_refused_without_one() {
        let base = ServiceSpec::new("app");
        let tune_only = SpecPatch {
            liveness_probe: Some(ProbePatch {
                period_ms: Some(5_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = tune_only.apply("web", Some(base.clone())).unwrap_err();
        assert_eq!(
            err.why,
            "--liveness-period and --liveness-failures need --liveness-probe"
        );
        let made = SpecPatch {
            liveness_probe: Some(ProbePatch {
                kind: Some("/healthz".into()),
                period_ms: Some(2_000),
                failure_threshold: Some(5),
            }),
            readiness_probe: Some(ProbePatch {
                kind: Some("tcp".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
        .apply("web", Some(base))
        .unwrap();
        let live = made.liveness_probe.clone().unwrap();
        assert_eq!(live.http_path.as_deref(), Some("/healthz"));
        assert_eq!((live.period_ms, live.failure_threshold), (2_000, 5));
        assert!(live.timeout_ms <= 2_000);
        assert_eq!(made.readiness_probe.as_ref().unwrap().http_path, None);
        let retuned = tune_only.apply("web", Some(made)).unwrap();
        assert_eq!(retuned.liveness_probe.unwrap().period_ms, 5_000);
    }

    #[test]
    fn env_is_set_edited_or_refused_when_both() {
        let mut base = ServiceSpec::new("app");
        base.env = vec!["DATABASE_URL=pg://db".into(), "MODE=a".into()];
        let update = SpecPatch {
            update_env: vec!["MODE=b".into(), "NEW=1".into()],
            remove_env: vec!["GONE".into()],
            ..Default::default()
        };
        let spec = update.apply("web", Some(base.clone())).unwrap();
        assert_eq!(spec.env, ["DATABASE_URL=pg://db", "MODE=b", "NEW=1"]);
        let remove = SpecPatch {
            remove_env: vec!["DATABASE_URL".into()],
            ..Default::default()
        };
        assert_eq!(
            remove.apply("web", Some(base.clone())).unwrap().env,
            ["MODE=a"]
        );
        let both = SpecPatch {
            env: Some(vec![]),
            update_env: vec!["A=1".into()],
            ..Default::default()
        };
        assert_eq!(both.apply("web", Some(base)).unwrap_err().field, "env");
    }

    #[test]
    fn secrets_are_set_edited_by_target_cleared_or_refused_when_both() {
        let uses =
            |list: &[&str]| -> Vec<SecretUse> { list.iter().map(|u| u.parse().unwrap()).collect() };
        let mut base = ServiceSpec::new("app");
        base.secrets = uses(&["A=a:1", "B=b:latest"]);
        let edit = SpecPatch {
            update_secrets: uses(&["A=a:2", "C=c/k:latest"]),
            remove_secrets: vec!["B".into()],
            ..Default::default()
        };
        let spec = edit.apply("web", Some(base.clone())).unwrap();
        assert_eq!(spec.secrets, uses(&["A=a:2", "C=c/k:latest"]));
        let clear = SpecPatch {
            secrets: Some(vec![]),
            ..Default::default()
        };
        assert!(clear
            .apply("web", Some(base.clone()))
            .unwrap()
            .secrets
            .is_empty());
        let both = SpecPatch {
            secrets: Some(vec![]),
            remove_secrets: vec!["A".into()],
            ..Default::default()
        };
        assert_eq!(both.apply("web", Some(base)).unwrap_err().field, "secrets");
    }

    #[test]
    fn working_dir_is_set_and_cleared() {
        let set = SpecPatch {
            working_dir: Some("/srv".into()),
            ..Default::default()
        };
        let spec = set.apply("web", Some(ServiceSpec::new("app"))).unwrap();
        assert_eq!(spec.working_dir.as_deref(), Some("/srv"));
        let clear = SpecPatch {
            working_dir: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(clear.apply("web", Some(spec)).unwrap().working_dir, None);
    }

    #[test]
    fn a_user_is_set_and_cleared() {
        let set = SpecPatch {
            user: Some("1000:1000".into()),
            read_only: Some(true),
            ..Default::default()
        };
        let spec = set.apply("web", Some(ServiceSpec::new("app"))).unwrap();
        assert_eq!(
            (spec.user.as_deref(), spec.read_only),
            (Some("1000:1000"), true)
        );
        let clear = SpecPatch {
            user: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(clear.apply("web", Some(spec)).unwrap().user, None);
    }
}
