//! The default seccomp filter: allow by default, refuse the calls that reach past the
//! sandbox (mounts, module loading, kexec, ptrace, bpf, keyrings, namespaces, io_uring …)
//! with `EPERM`, make `clone3` look absent (`ENOSYS`) so libc falls back to `clone`, whose
//! flags can be checked, and kill any process that switches to the i386 or x32 ABI to
//! dodge the filter.
//!
//! The filter is compiled in the parent into plain BPF; the child only hands it to the
//! kernel, because the child must not allocate.

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use std::io::{Read, Seek};

/// Calls refused with `EPERM`.
pub const DENIED: &[&str] = &[
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "userfaultfd",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "iopl",
    "ioperm",
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "vhangup",
    "nfsservctl",
    "uselib",
    "_sysctl",
    "setns",
    "unshare",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Compiles the default filter to BPF instructions (`struct sock_filter` array bytes).
pub fn default_filter_bpf() -> Result<Vec<u8>, String> {
    build().map_err(|e| format!("building seccomp filter: {e}"))
}

fn build() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow)?;
    ctx.set_act_badarch(ScmpAction::KillProcess)?;
    // no_new_privs is set by the child itself, before loading.
    ctx.set_ctl_nnp(false)?;
    for name in DENIED {
        // A name this libseccomp does not know does not exist on this kernel's ABI either.
        if let Ok(sys) = ScmpSyscall::from_name(name) {
            ctx.add_rule(ScmpAction::Errno(libc::EPERM), sys)?;
        }
    }
    if let Ok(sys) = ScmpSyscall::from_name("clone3") {
        ctx.add_rule(ScmpAction::Errno(libc::ENOSYS), sys)?;
    }
    let clone = ScmpSyscall::from_name("clone")?;
    for flag in NAMESPACE_FLAGS {
        ctx.add_rule_conditional(
            ScmpAction::Errno(libc::EPERM),
            clone,
            &[ScmpArgCompare::new(
                0,
                ScmpCompareOp::MaskedEqual(flag),
                flag,
            )],
        )?;
    }
    let memfd = rustix::fs::memfd_create("skiff-seccomp", rustix::fs::MemfdFlags::CLOEXEC)?;
    ctx.export_bpf(&memfd)?;
    let mut file = std::fs::File::from(memfd);
    let mut bpf = Vec::new();
    file.rewind()?;
    file.read_to_end(&mut bpf)?;
    Ok(bpf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn filter_compiles_to_whole_instructions() {
        let bpf = super::default_filter_bpf().unwrap();
        assert!(!bpf.is_empty());
        assert_eq!(bpf.len() % std::mem::size_of::<libc::sock_filter>(), 0);
    }
}
