//! The sandbox side of skiff's binary: `main` calls [`enter_if_asked`] first, and a
//! process executed as the zygote (see `zygote`) serves there and never returns. Also
//! the plan's flat encoding, which goes to the zygote in a sealed memory file.
//!
//! This module must not do anything else: what a sandbox does is `child::run`.
#![allow(unsafe_code)]

use crate::cgroupfs::CgroupView;
use crate::child::{ChildPlan, NetPlan, SecretMountPlan};
use rustix::fd::OwnedFd;
use std::ffi::{CStr, CString};

/// If this process was started as the sandboxes' zygote, serves as it (never returns);
/// otherwise returns at once.
pub fn enter_if_asked() {
    let mut args = std::env::args_os();
    if args.next().as_deref() != Some(std::ffi::OsStr::new(crate::zygote::NAME)) {
        return;
    }
    let fd = args
        .next()
        .and_then(|a| a.to_str()?.parse::<i32>().ok())
        .filter(|fd| *fd >= 0)
        .unwrap_or_else(|| std::process::exit(2));
    // SAFETY: the daemon handed this descriptor (its socket) to this process alone.
    let socket = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    crate::zygote::serve(socket)
}

/// The running binary, to start the zygote from: opened once, so a binary replaced on
/// disk (an upgrade) does not meet a plan of the running daemon's version.
pub fn own_binary() -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        "/proc/self/exe",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// The whole of a plan file; an errno on failure.
pub(crate) fn read_file(fd: &OwnedFd) -> Result<Vec<u8>, i32> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut at = 0u64;
    loop {
        match rustix::io::pread(fd, &mut chunk, at) {
            Ok(0) => return Ok(bytes),
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                at += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.raw_os_error()),
        }
    }
}

/// A sealed memory file holding `plan`, for the zygote to read.
pub(crate) fn plan_file(plan: &ChildPlan) -> std::io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        "skiff-sandbox-plan",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    fill_and_seal(&fd, &encode(plan), SealFlags::empty())?;
    Ok(fd)
}

/// Writes `bytes` into a new memory file, then seals it against writes, resizing and
/// further seals, and `extra` (a seal the kernel does not know is left out).
pub(crate) fn fill_and_seal(
    fd: &OwnedFd,
    bytes: &[u8],
    extra: rustix::fs::SealFlags,
) -> std::io::Result<()> {
    use rustix::fs::SealFlags;
    let mut done = 0;
    while done < bytes.len() {
        done += rustix::io::write(fd, &bytes[done..])?;
    }
    let seals = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
    match rustix::fs::fcntl_add_seals(fd, seals | extra) {
        Err(rustix::io::Errno::INVAL) if !extra.is_empty() => {
            rustix::fs::fcntl_add_seals(fd, seals)?
        }
        other => other?,
    }
    Ok(())
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.u32(v as u32);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.0.push(v as u8);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn cstr(&mut self, s: &CStr) {
        self.bytes(s.to_bytes());
    }
    fn cstrs(&mut self, list: &[CString]) {
        self.u32(list.len() as u32);
        list.iter().for_each(|s| self.cstr(s));
    }
    fn pairs(&mut self, list: &[(CString, CString)]) {
        self.u32(list.len() as u32);
        for (a, b) in list {
            self.cstr(a);
            self.cstr(b);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(self.u32()? as i32)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bool(&mut self) -> Option<bool> {
        Some(self.take(1)?[0] != 0)
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.to_vec())
    }
    fn cstr(&mut self) -> Option<CString> {
        CString::new(self.bytes()?).ok()
    }
    fn count(&mut self) -> Option<usize> {
        let n = self.u32()? as usize;
        // Each item takes at least four bytes: a count past that is a broken plan.
        (n <= self.0.len() / 4 + 1).then_some(n)
    }
    fn cstrs(&mut self) -> Option<Vec<CString>> {
        (0..self.count()?).map(|_| self.cstr()).collect()
    }
    fn pairs(&mut self) -> Option<Vec<(CString, CString)>> {
        (0..self.count()?)
            .map(|_| Some((self.cstr()?, self.cstr()?)))
            .collect()
    }
}

pub(crate) fn encode(p: &ChildPlan) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(4096));
    for fd in [p.sync_fd, p.err_fd, p.stdout_fd, p.stderr_fd, p.probe_fd] {
        w.i32(fd);
    }
    for s in [
        &p.scratch,
        &p.scratch_opts,
        &p.upper,
        &p.work,
        &p.merged,
        &p.layers_dir,
        &p.overlay_opts,
    ] {
        w.cstr(s);
    }
    w.i32(p.userns_fd);
    w.i32(p.scratch_tree);
    w.u32(p.id_base);
    w.pairs(&p.idmapped_layers);
    w.bytes(&p.hosts);
    w.bytes(&p.resolv_conf);
    w.bool(p.read_only);
    w.cstr(&p.hostname);
    w.bool(p.net.is_some());
    if let Some(net) = &p.net {
        w.0.extend_from_slice(&net.addr);
        w.0.extend_from_slice(&net.mask);
        w.bool(net.gateway.is_some());
        w.0.extend_from_slice(&net.gateway.unwrap_or_default());
    }
    w.u32(p.uid);
    w.u32(p.gid);
    w.u32(p.groups.len() as u32);
    p.groups.iter().for_each(|g| w.u32(*g));
    w.u64(p.keep_caps);
    w.u32(p.last_cap);
    w.u32(p.seccomp.len() as u32);
    for f in &p.seccomp {
        w.u32(f.code as u32);
        w.u32(f.jt as u32 | (f.jf as u32) << 8);
        w.u32(f.k);
    }
    w.bool(p.init);
    w.bool(p.cgroups.base_tmpfs);
    w.pairs(&p.cgroups.binds);
    w.pairs(&p.cgroups.links);
    w.cstr(&p.cwd);
    w.cstrs(&p.args);
    w.cstrs(&p.env);
    w.cstrs(&p.exec_paths);
    w.u32(p.secret_mounts.len() as u32);
    for m in &p.secret_mounts {
        w.i32(m.fd);
        w.cstr(&m.target);
        w.cstrs(&m.dirs);
    }
    w.0
}

pub(crate) fn decode(bytes: &[u8]) -> Option<ChildPlan> {
    let mut r = Reader(bytes);
    let mut fds = [0; 5];
    for fd in &mut fds {
        *fd = r.i32()?;
    }
    let mut strings: [CString; 7] = Default::default();
    for s in &mut strings {
        *s = r.cstr()?;
    }
    let [scratch, scratch_opts, upper, work, merged, layers_dir, overlay_opts] = strings;
    let userns_fd = r.i32()?;
    let scratch_tree = r.i32()?;
    let id_base = r.u32()?;
    let idmapped_layers = r.pairs()?;
    let hosts = r.bytes()?;
    let resolv_conf = r.bytes()?;
    let read_only = r.bool()?;
    let hostname = r.cstr()?;
    let net = if r.bool()? {
        let addr = r.take(4)?.try_into().ok()?;
        let mask = r.take(4)?.try_into().ok()?;
        let routed = r.bool()?;
        let gateway: [u8; 4] = r.take(4)?.try_into().ok()?;
        Some(NetPlan {
            addr,
            mask,
            gateway: routed.then_some(gateway),
        })
    } else {
        None
    };
    let uid = r.u32()?;
    let gid = r.u32()?;
    let groups = (0..r.count()?).map(|_| r.u32()).collect::<Option<_>>()?;
    let keep_caps = r.u64()?;
    let last_cap = r.u32()?;
    let seccomp = (0..r.count()?)
        .map(|_| {
            let code = r.u32()? as u16;
            let jumps = r.u32()?;
            Some(libc::sock_filter {
                code,
                jt: jumps as u8,
                jf: (jumps >> 8) as u8,
                k: r.u32()?,
            })
        })
        .collect::<Option<_>>()?;
    let init = r.bool()?;
    let cgroups = CgroupView {
        base_tmpfs: r.bool()?,
        binds: r.pairs()?,
        links: r.pairs()?,
    };
    let cwd = r.cstr()?;
    let args = r.cstrs()?;
    let env = r.cstrs()?;
    let exec_paths = r.cstrs()?;
    let secret_mounts = (0..r.count()?)
        .map(|_| {
            Some(SecretMountPlan {
                fd: r.i32()?,
                target: r.cstr()?,
                dirs: r.cstrs()?,
            })
        })
        .collect::<Option<_>>()?;
    if !r.0.is_empty() {
        return None;
    }
    let [sync_fd, err_fd, stdout_fd, stderr_fd, probe_fd] = fds;
    Some(ChildPlan::with_pointers(ChildPlan {
        sync_fd,
        err_fd,
        stdout_fd,
        stderr_fd,
        probe_fd,
        scratch,
        scratch_opts,
        upper,
        work,
        merged,
        layers_dir,
        overlay_opts,
        userns_fd,
        scratch_tree,
        id_base,
        idmapped_layers,
        hosts,
        resolv_conf,
        read_only,
        hostname,
        net,
        uid,
        gid,
        groups,
        keep_caps,
        last_cap,
        seccomp,
        init,
        cgroups,
        cwd,
        args,
        env,
        argv: Vec::new(),
        envp: Vec::new(),
        exec_paths,
        secret_mounts,
        shared_sysfs: -1,
        init_exe: -1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChildPlan {
        let c = |s: &str| CString::new(s).unwrap();
        ChildPlan::with_pointers(ChildPlan {
            sync_fd: 3,
            err_fd: 4,
            stdout_fd: 5,
            stderr_fd: 6,
            probe_fd: -1,
            scratch: c("/run/s/x"),
            scratch_opts: c("size=1,mode=0700"),
            upper: c("/run/s/x/upper"),
            work: c("/run/s/x/work"),
            merged: c("/run/s/x/merged"),
            layers_dir: c("/var/l"),
            overlay_opts: c("lowerdir=a:b"),
            userns_fd: 9,
            scratch_tree: 10,
            id_base: 1 << 29,
            idmapped_layers: vec![(c("a"), c("/run/s/x/l0"))],
            hosts: b"127.0.0.1\tlocalhost\n".to_vec(),
            resolv_conf: Vec::new(),
            read_only: true,
            hostname: c("x"),
            net: Some(NetPlan {
                addr: [10, 0, 0, 2],
                mask: [255, 255, 255, 252],
                gateway: Some([10, 0, 0, 1]),
            }),
            uid: 1000,
            gid: 1001,
            groups: vec![5, 6],
            keep_caps: 0x5fb,
            last_cap: 40,
            seccomp: vec![libc::sock_filter {
                code: 6,
                jt: 1,
                jf: 2,
                k: 0x7fff_0000,
            }],
            init: true,
            cgroups: CgroupView {
                base_tmpfs: true,
                binds: vec![(c("/sys/fs/cgroup/memory/x"), c("/sys/fs/cgroup/memory"))],
                links: vec![(c("/sys/fs/cgroup/cpuacct"), c("cpu,cpuacct"))],
            },
            cwd: c("/app"),
            args: vec![c("/bin/sh"), c("-c"), c("echo hi")],
            env: vec![c("PATH=/bin")],
            argv: Vec::new(),
            envp: Vec::new(),
            exec_paths: vec![c("/bin/sh")],
            secret_mounts: vec![SecretMountPlan {
                fd: 11,
                target: c("/etc/s"),
                dirs: vec![c("/etc"), c("/etc/s")],
            }],
            shared_sysfs: -1,
            init_exe: -1,
        })
    }

    #[test]
    fn a_plan_comes_back_as_it_went() {
        let plan = sample();
        let bytes = encode(&plan);
        let back = decode(&bytes).expect("decodes");
        assert_eq!(encode(&back), bytes);
        assert_eq!(back.args, plan.args);
        assert_eq!(back.net.as_ref().unwrap().gateway, Some([10, 0, 0, 1]));
        assert_eq!(back.seccomp[0].jf, 2);
        // The pointers are the decoded strings', ending with NULL.
        assert_eq!(back.argv.len(), 4);
        assert!(back.argv[3].is_null());
        // SAFETY: argv[2] points into back.args[2], alive here.
        assert_eq!(unsafe { CStr::from_ptr(back.argv[2]) }, c"echo hi");
        assert_eq!(back.envp.len(), 2);
    }

    #[test]
    fn a_cut_or_padded_plan_is_refused() {
        let bytes = encode(&sample());
        for cut in [0, 1, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
        // A count far past what is left is refused before anything is made for it.
        let mut huge = encode(&sample());
        huge[..4].copy_from_slice(&3i32.to_le_bytes());
        let strings_at = 5 * 4;
        huge[strings_at..strings_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_none());
    }
}
