//! The process an image asks to run: Entrypoint + Cmd, Env, WorkingDir and User from its
//! config, with the user resolved to numeric ids against the image's own `/etc/passwd`
//! and `/etc/group` (never the host's).

use crate::error::ImageError;
use crate::ImageStore;
use oci_spec::image::ImageConfiguration;
use skiff_store::ImageRecord;

use skiff_core::DEFAULT_PATH;

/// A user resolved to numeric ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups from the image's `/etc/group`.
    pub groups: Vec<u32>,
    /// Home directory (for `HOME` when the image sets none).
    pub home: String,
}

/// What to execute, from the image config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessConfig {
    /// Entrypoint followed by Cmd.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs, `PATH` always present.
    pub env: Vec<String>,
    /// Working directory (default `/`).
    pub cwd: String,
    /// The config's `User` string (empty = root).
    pub user: String,
    /// The signal that asks the app to stop (`StopSignal`; SIGTERM when unset).
    pub stop_signal: i32,
}

/// Signals an image may name as its `StopSignal`, by number (the same on every Linux
/// architecture skiff builds for).
const SIGNALS: [(&str, i32); 12] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("ALRM", 14),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
    ("WINCH", 28),
    ("PWR", 30),
];

/// `SIGQUIT`, `QUIT` or `3` as a signal number.
pub fn parse_signal(text: &str) -> Option<i32> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = t.strip_prefix("SIG").unwrap_or(t);
    SIGNALS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, number)| number)
}

impl ProcessConfig {
    /// Reads the process config from an image config JSON.
    pub fn from_image(image: &ImageRecord) -> Result<Self, ImageError> {
        let cfg: ImageConfiguration = serde_json::from_str(&image.config_json)
            .map_err(|e| ImageError::Format(format!("config {}: {e}", image.config_digest)))?;
        let c = cfg.config().clone().unwrap_or_default();
        let mut args: Vec<String> = c.entrypoint().clone().unwrap_or_default();
        args.extend(c.cmd().clone().unwrap_or_default());
        let mut env: Vec<String> = c.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        Ok(ProcessConfig {
            args,
            env,
            cwd: c
                .working_dir()
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: c.user().clone().unwrap_or_default(),
            stop_signal: match c.stop_signal().as_deref().filter(|s| !s.is_empty()) {
                None => 15,
                Some(text) => parse_signal(text).ok_or_else(|| {
                    ImageError::Format(format!(
                        "config {}: StopSignal {text:?} is not a signal",
                        image.config_digest
                    ))
                })?,
            },
        })
    }

    /// Replaces Cmd (keeping Entrypoint), as words after `--` do for `skiff run`.
    pub fn with_command(image: &ImageRecord, cmd: Vec<String>) -> Result<Self, ImageError> {
        let cfg: ImageConfiguration = serde_json::from_str(&image.config_json)
            .map_err(|e| ImageError::Format(format!("config {}: {e}", image.config_digest)))?;
        let mut p = Self::from_image(image)?;
        let mut args = cfg
            .config()
            .as_ref()
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default();
        args.extend(cmd);
        p.args = args;
        Ok(p)
    }
}

impl ImageStore {
    /// Resolves an image `User` (`name`, `uid`, `name:group`, `uid:gid`) against the
    /// image's own account files.
    pub fn resolve_user(
        &self,
        image: &ImageRecord,
        user: &str,
    ) -> Result<ResolvedUser, ImageError> {
        self.check_snapshots(image)?;
        let layers = self.rootfs_layers(image);
        let passwd = crate::rootfs::read_file(&layers, "etc/passwd").unwrap_or_default();
        let group = crate::rootfs::read_file(&layers, "etc/group").unwrap_or_default();
        resolve(
            user,
            &String::from_utf8_lossy(&passwd),
            &String::from_utf8_lossy(&group),
        )
        .map_err(|why| ImageError::Format(format!("image user {user:?}: {why}")))
    }
}

fn resolve(user: &str, passwd: &str, group: &str) -> Result<ResolvedUser, String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (if user.is_empty() { "0" } else { user }, None),
    };
    let pw_entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && (f[0] == u || f[2] == u));
    let uid: u32 = match u.parse() {
        Ok(n) => n,
        Err(_) => pw_entry
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| format!("no user {u:?} in the image's /etc/passwd"))?,
    };
    let home = pw_entry
        .as_ref()
        .map(|f| f[5].to_string())
        .unwrap_or_else(|| "/".into());
    let gid: u32 = match g {
        Some(g) => match g.parse() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("no group {g:?} in the image's /etc/group"))?,
        },
        None => pw_entry
            .as_ref()
            .and_then(|f| f[3].parse().ok())
            .unwrap_or(0),
    };
    let name = pw_entry.as_ref().map(|f| f[0]).unwrap_or(u);
    let groups = if g.is_some() {
        Vec::new()
    } else {
        group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|&id| id != gid)
            .collect()
    };
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app\n";

    fn image_with(config: &str) -> ImageRecord {
        let d = skiff_core::Digest::from_sha256_bytes(&[1; 32]);
        ImageRecord {
            digest: d.clone(),
            config_digest: d,
            config_json: format!(
                r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{config}}}"#
            ),
            source: "test".into(),
            size: 0,
            created_at: 0,
            tags: vec![],
            layers: vec![],
        }
    }

    #[test]
    fn the_images_stop_signal_is_read_and_a_bad_one_named() {
        let nginx = image_with(r#"{"Cmd":["nginx"],"StopSignal":"SIGQUIT"}"#);
        assert_eq!(ProcessConfig::from_image(&nginx).unwrap().stop_signal, 3);
        let plain = image_with(r#"{"Cmd":["app"]}"#);
        assert_eq!(ProcessConfig::from_image(&plain).unwrap().stop_signal, 15);
        let bad = image_with(r#"{"Cmd":["app"],"StopSignal":"SIGNOPE"}"#);
        let err = ProcessConfig::from_image(&bad).unwrap_err().to_string();
        assert!(
            err.contains("StopSignal \"SIGNOPE\" is not a signal"),
            "{err}"
        );
    }

    #[test]
    fn stop_signals_read_as_docker_writes_them() {
        assert_eq!(parse_signal("SIGQUIT"), Some(3));
        assert_eq!(parse_signal("quit"), Some(3));
        assert_eq!(parse_signal("SIGWINCH"), Some(28));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("99"), None);
    }

    #[test]
    fn resolves_names_and_numbers() {
        let r = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!(
            (r.uid, r.gid, r.groups.clone(), r.home.as_str()),
            (1000, 1000, vec![10], "/home/app")
        );
        assert_eq!(resolve("", PASSWD, GROUP).unwrap().uid, 0);
        let r = resolve("4242:4343", PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (4242, 4343));
        assert_eq!(resolve("app:wheel", PASSWD, GROUP).unwrap().gid, 10);
        assert_eq!(resolve("1000", PASSWD, GROUP).unwrap().gid, 1000);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(resolve("nobody", PASSWD, GROUP)
            .unwrap_err()
            .contains("nobody"));
        assert!(resolve("app:nogroup", PASSWD, GROUP)
            .unwrap_err()
            .contains("nogroup"));
    }
}
