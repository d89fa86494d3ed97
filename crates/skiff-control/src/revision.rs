//! A revision resolved once, when it is deployed or reloaded: the image digest, the
//! process (argv, environment, working directory, user), the root filesystem's layers and
//! the limits. It is the contract between the control plane and the runtime, so a runtime
//! never reads a spec or an image config and every instance of a revision runs the same.

use crate::ControlError;
use skiff_core::{Digest, ServiceSpec};
use skiff_image::{ImageStore, ProcessConfig, ResolvedUser};
use skiff_store::ImageRecord;
use std::path::PathBuf;

/// Cap on an instance's processes and threads.
pub const PIDS_LIMIT: u64 = 4096;

/// What every instance of a revision runs.
#[derive(Clone, Debug)]
pub struct Revision {
    pub service: String,
    /// `SERVICE-NNNNN`.
    pub name: String,
    pub image_digest: Digest,
    /// The spec it was deployed with (port, concurrency, probes, scaling).
    pub spec: ServiceSpec,
    pub process: Process,
    /// The image's layer directories, lowest first.
    pub rootfs: Vec<PathBuf>,
    /// The root filesystem is mounted read-only.
    pub read_only: bool,
    pub limits: Limits,
}

/// The app's process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub args: Vec<String>,
    /// `KEY=VALUE`, the image's, then skiff's (`PORT`, `K_*`), then the spec's.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The signal that asks it to stop (the image's `StopSignal`, else SIGTERM).
    pub stop_signal: i32,
}

/// Resource limits of each instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu_millis: u64,
    pub pids: u64,
}

impl Revision {
    /// Resolves `spec` against `image` for revision `name` of `service`. Everything that
    /// can be wrong with the image's process is found here, before a revision is written.
    pub fn resolve(
        images: &ImageStore,
        image: &ImageRecord,
        spec: &ServiceSpec,
        service: &str,
        name: &str,
    ) -> Result<Revision, ControlError> {
        let bad = |e: String| ControlError::InvalidSpec {
            message: format!("image {}: {e}", spec.image),
            field: None,
        };
        let mut process = if spec.command.is_empty() {
            ProcessConfig::from_image(image)
        } else {
            ProcessConfig::with_command(image, spec.command.clone())
        }
        .map_err(|e| bad(e.to_string()))?;
        if !spec.entrypoint.is_empty() {
            process.args = spec.entrypoint.clone();
            process.args.extend(spec.command.iter().cloned());
        }
        let wanted = spec.user.as_deref().unwrap_or(&process.user);
        let user = images
            .resolve_user(image, wanted)
            .map_err(|e| bad(e.to_string()))?;
        if spec.run_as_non_root && user.uid == 0 {
            return Err(ControlError::invalid_spec(
                "user",
                format!(
                    "runAsNonRoot: image {} runs as root (uid 0); give it a user \
                     (--user, runAsUser)",
                    spec.image
                ),
            ));
        }
        let mut extra = vec![
            format!("K_SERVICE={service}"),
            format!("K_REVISION={name}"),
            format!("K_CONFIGURATION={service}"),
        ];
        extra.extend(spec.env.iter().cloned());
        let env = merged_env(&process.env, &extra, spec.port, &user).map_err(bad)?;
        Ok(Revision {
            service: service.to_owned(),
            name: name.to_owned(),
            image_digest: image.digest.clone(),
            spec: spec.clone(),
            process: Process {
                args: process.args,
                env,
                cwd: spec.working_dir.clone().unwrap_or(process.cwd),
                uid: user.uid,
                gid: user.gid,
                groups: user.groups,
                stop_signal: process.stop_signal,
            },
            rootfs: images.rootfs_layers(image),
            read_only: spec.read_only,
            limits: Limits {
                memory_bytes: spec.memory_bytes,
                cpu_millis: spec.cpu_millis,
                pids: PIDS_LIMIT,
            },
        })
    }
}

/// The image's environment with `HOME` (when the image sets none), `PORT` and `extra`
/// (`KEY=VALUE`, later ones win) applied.
pub fn merged_env(
    image_env: &[String],
    extra: &[String],
    port: u16,
    user: &ResolvedUser,
) -> Result<Vec<String>, String> {
    let mut env: Vec<String> = image_env.to_vec();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    if !image_env.iter().any(|e| e.starts_with("HOME=")) {
        set(format!("HOME={}", user.home));
    }
    set(format!("PORT={port}"));
    for kv in extra {
        if !kv.contains('=') || kv.starts_with('=') {
            return Err(format!("environment entry {kv:?} is not KEY=VALUE"));
        }
        set(kv.clone());
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_port() {
        let user = ResolvedUser {
            uid: 0,
            gid: 0,
            groups: vec![],
            home: "/root".into(),
        };
        let env = merged_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into()],
            9000,
            &user,
        )
        .unwrap();
        assert_eq!(env, vec!["PATH=/bin", "HOME=/root", "PORT=9000", "A=2"]);
        assert!(merged_env(&[], &["NOEQUALS".into()], 1, &user).is_err());
    }
}
