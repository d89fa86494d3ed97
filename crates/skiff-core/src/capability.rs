//! Linux capability names, as Kubernetes' `securityContext.capabilities` and Docker's
//! `--cap-drop` write them (`NET_RAW`, `CAP_NET_RAW`, or `ALL`), and their numbers.

/// Every capability Linux defines, by number.
const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// What an instance running as root keeps unless told to drop it (Docker's default set,
/// without the ones skiff never gives: MKNOD, NET_RAW, SYS_CHROOT, SETFCAP, AUDIT_WRITE).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
];

/// The canonical form of a capability name (upper case, no `CAP_`), or `ALL`; `None`
/// for a name Linux does not have.
pub fn canonical_capability(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    (bare == "ALL" || NAMES.contains(&bare)).then(|| bare.to_owned())
}

/// The bit mask of canonical names (`ALL`: every bit).
pub fn capability_mask(names: &[String]) -> u64 {
    names.iter().fold(0, |mask, name| {
        if name == "ALL" {
            return u64::MAX;
        }
        match NAMES.iter().position(|n| n == name) {
            Some(bit) => mask | (1u64 << bit),
            None => mask,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_as_kubernetes_and_docker_write_them() {
        assert_eq!(canonical_capability("NET_RAW").as_deref(), Some("NET_RAW"));
        assert_eq!(
            canonical_capability("cap_net_raw").as_deref(),
            Some("NET_RAW")
        );
        assert_eq!(canonical_capability("all").as_deref(), Some("ALL"));
        assert_eq!(canonical_capability("NET_RAWR"), None);
        assert_eq!(
            capability_mask(&["CHOWN".into(), "NET_RAW".into()]),
            1 | 1 << 13
        );
        assert_eq!(capability_mask(&["ALL".into()]), u64::MAX);
        assert_eq!(capability_mask(&["CHECKPOINT_RESTORE".into()]), 1 << 40);
    }
}
