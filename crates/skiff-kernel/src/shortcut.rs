//! The upstream shortcut: bytes between the router and an instance go from one socket's
//! send call straight into the other's receive queue, skipping the TCP/IP stack on the
//! instance's loopback (a sockhash per side and an `sk_msg` program redirecting to
//! ingress; the connection stays an ordinary TCP connection to both ends, and its
//! handshake and close still go through TCP).
//!
//! Only connections between the router and an instance take it: the router marks the
//! upstream sockets that may (`SO_MARK`, a value of this daemon's own), a `sock_ops`
//! program adds a marked socket when it connects and the instance's end when it accepts
//! from a marked peer. Nothing else on the host is touched, not even connections inside
//! an instance.
//!
//! A redirected message is not held back by the receiver's buffer, as TCP is, so each end
//! may send at most [`BUDGET`] bytes this way in its lifetime; past that, or when the
//! peer's end is not in the map, the direction falls back to TCP for good (redirected
//! bytes are read first, so the order holds, and TCP's window bounds the rest). The two
//! directions differ in who may see that fallback:
//! - Answers: an app's sends cannot be bounded, so they may fall back. The router reads
//!   its sockets until `EAGAIN` (see skiff-router's `stream`), because after a fallback one read returns
//!   what was redirected and the next what came by TCP.
//! - Requests: an app's event loop may take a short read for "drained" (tokio, nginx do)
//!   and never come back for bytes that arrived by TCP behind redirected ones. So the
//!   router never sends more than [`REQUEST_BUDGET`] on a marked connection (well under
//!   [`BUDGET`]), and sends requests of unknown or larger size on unmarked ones: the
//!   request direction of a marked connection goes all by redirect, or (when its first
//!   send found no peer yet) all by TCP.
//!
//! This module installs and removes the programs; it must not decide what is proxied
//! (that is skiff-router's).

use crate::bpf::{self, Asm, AttachType, MapType, ProgType, FP, R0, R1, R2, R3, R4, R6, R7, R8};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes each direction of a connection may move through the shortcut; the rest go by
/// TCP. Also what an unread direction can hold in the receiver's queue: plain TCP lets a
/// connection hold more (its receive buffer grows to `tcp_rmem`'s 6 MiB).
pub const BUDGET: u32 = 4 << 20;

/// Request bytes the router sends on a marked connection in its lifetime. Half of
/// [`BUDGET`]: the program counts a message before the kernel queues it, so a send that
/// fails for want of memory (and is sent again) counts twice there and once here.
pub const REQUEST_BUDGET: u64 = BUDGET as u64 / 2;

/// Connections tracked at once (each has two ends).
const MAX_ENDS: u32 = 65_536;

/// The mark (`SO_MARK`) of this process's router sockets that may take the shortcut; 0
/// while none is installed.
static MARK: AtomicU32 = AtomicU32::new(0);

/// A mark of this daemon's own: with a shared one, another daemon on the host (tests run
/// several) would admit this one's sockets into its maps, and its exit would drop bytes
/// still queued in them.
fn own_mark() -> u32 {
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).expect("the kernel's random source is available");
        // 31 bits: the program compares it with a 64-bit jump, whose immediate is signed.
        let mark = u32::from_ne_bytes(b) & 0x7fff_ffff;
        if mark != 0 {
            return mark;
        }
    }
}

/// The mark to set on a new upstream socket, if a shortcut is installed.
pub fn upstream_mark() -> Option<u32> {
    match MARK.load(Ordering::Relaxed) {
        0 => None,
        mark => Some(mark),
    }
}

/// Why the shortcut could not be installed (the router then works without it).
#[derive(Debug, thiserror::Error)]
pub enum ShortcutError {
    /// No cgroup v2 hierarchy to attach to.
    #[error("no cgroup2 hierarchy is mounted (read /proc/self/mountinfo)")]
    NoCgroup2,
    /// Another shortcut is installed in this process.
    #[error("a shortcut is already installed in this process")]
    AlreadyInstalled,
    /// A kernel call failed.
    #[error("{what}: {source}")]
    Kernel {
        /// Which step.
        what: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
}

fn kernel(what: impl Into<String>) -> impl FnOnce(io::Error) -> ShortcutError {
    let what = what.into();
    move |source| ShortcutError::Kernel { what, source }
}

/// An installed shortcut. Dropping it detaches the programs and frees the maps; the
/// connections they shortcut go on over TCP.
pub struct Shortcut {
    cgroup: PathBuf,
    // Fields drop in order: the link first (no new sockets join), then the maps.
    _sock_ops_link: OwnedFd,
    _sock_ops: OwnedFd,
    _answers: OwnedFd,
    _requests: OwnedFd,
    _instance_ends: OwnedFd,
    _router_ends: OwnedFd,
    _budgets: OwnedFd,
}

impl Shortcut {
    /// Loads the programs and attaches them to the cgroup2 hierarchy's root (so every
    /// socket of the router and of its instances is seen, wherever they run). Needs
    /// `CAP_BPF` and `CAP_NET_ADMIN`, and Linux 5.15 or later.
    pub fn install() -> Result<Shortcut, ShortcutError> {
        if cfg!(target_endian = "big") {
            // The programs read port fields in their little-endian layout.
            return Err(ShortcutError::Kernel {
                what: "installing".into(),
                source: io::Error::other("only little-endian hosts are supported"),
            });
        }
        let cgroup = cgroup2_root().ok_or(ShortcutError::NoCgroup2)?;
        let dir = std::fs::File::open(&cgroup)
            .map_err(kernel(format!("opening {}", cgroup.display())))?;
        let budgets = bpf::create_map(MapType::Hash, KEY_SIZE, 8, MAX_ENDS, bpf::NO_PREALLOC)
            .map_err(kernel("creating the budget map"))?;
        let router_ends = bpf::create_map(MapType::SockHash, KEY_SIZE, 4, MAX_ENDS, 0)
            .map_err(kernel("creating the router socket map"))?;
        let instance_ends = bpf::create_map(MapType::SockHash, KEY_SIZE, 4, MAX_ENDS, 0)
            .map_err(kernel("creating the instance socket map"))?;
        let mark = own_mark();
        let answers = redirect(&instance_ends, &router_ends, &budgets, "skiff_answers")?;
        let requests = redirect(&router_ends, &instance_ends, &budgets, "skiff_requests")?;
        let sock_ops = bpf::load_program(
            ProgType::SockOps,
            "skiff_admit",
            &admit_program(
                router_ends.as_fd(),
                instance_ends.as_fd(),
                budgets.as_fd(),
                mark,
            ),
        )
        .map_err(kernel("loading the sock_ops program"))?;
        if MARK
            .compare_exchange(0, mark, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(ShortcutError::AlreadyInstalled);
        }
        let link =
            bpf::link(sock_ops.as_fd(), dir.as_fd(), AttachType::CgroupSockOps).map_err(|e| {
                MARK.store(0, Ordering::SeqCst);
                kernel(format!(
                    "attaching the sock_ops program to {}",
                    cgroup.display()
                ))(e)
            })?;
        Ok(Shortcut {
            cgroup,
            _sock_ops_link: link,
            _sock_ops: sock_ops,
            _answers: answers,
            _requests: requests,
            _instance_ends: instance_ends,
            _router_ends: router_ends,
            _budgets: budgets,
        })
    }

    /// The cgroup the `sock_ops` program is attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }
}

impl Drop for Shortcut {
    fn drop(&mut self) {
        MARK.store(0, Ordering::SeqCst);
    }
}

/// Loads a redirect program for the sends of the sockets in `from` and attaches it there.
fn redirect(
    from: &OwnedFd,
    to: &OwnedFd,
    budgets: &OwnedFd,
    name: &str,
) -> Result<OwnedFd, ShortcutError> {
    let program = bpf::load_program(
        ProgType::SkMsg,
        name,
        &redirect_program(to.as_fd(), budgets.as_fd()),
    )
    .map_err(kernel(format!("loading the sk_msg program {name}")))?;
    bpf::attach(program.as_fd(), from.as_fd(), AttachType::SkMsgVerdict).map_err(kernel(
        format!("attaching the sk_msg program {name} to its socket map"),
    ))?;
    Ok(program)
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one).
fn cgroup2_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_mount_in(&text)
}

/// The first cgroup2 mount point in `mountinfo` text.
fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let point = left.split(' ').nth(4)?;
        Some(PathBuf::from(unescape_mount_path(point)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// The key of one end of a connection: its network namespace's cookie, then its local and
// remote IPv4 address (network order) and port (host order). A connection's two ends have
// mirrored keys, so either end finds the other's.
const KEY_SIZE: u32 = 24;
/// Stack offsets of this end's key and of the peer's.
const OWN: i16 = -24;
const PEER: i16 = -48;
/// Stack offset of a new budget entry's value.
const ZERO: i16 = -56;
/// A budget entry's value once it is spent (above [`BUDGET`]).
const SPENT: i32 = i32::MAX;

// Kernel ABI numbers (linux/bpf.h).
const FN_MAP_LOOKUP: i32 = 1;
const FN_MAP_UPDATE: i32 = 2;
const FN_MAP_DELETE: i32 = 3;
const FN_SOCK_OPS_CB_FLAGS_SET: i32 = 59;
const FN_SOCK_HASH_UPDATE: i32 = 70;
const FN_MSG_REDIRECT_HASH: i32 = 71;
const FN_GET_NETNS_COOKIE: i32 = 122;
const AF_INET: i32 = 2;
const BPF_ANY: i32 = 0;
const BPF_NOEXIST: i32 = 1;
const BPF_F_INGRESS: i32 = 1;
const SK_PASS: i32 = 1;
const OPS_ACTIVE_ESTABLISHED: i32 = 4;
const OPS_PASSIVE_ESTABLISHED: i32 = 5;
const OPS_STATE_CB: i32 = 10;
const OPS_STATE_CB_FLAG: i32 = 4;
const TCP_CLOSE: i32 = 7;

/// Where a context keeps the fields a key is made of.
struct KeyFields {
    family: i16,
    remote_ip4: i16,
    local_ip4: i16,
    remote_port: i16,
    local_port: i16,
}

/// `struct bpf_sock_ops`.
const SOCK_OPS: KeyFields = KeyFields {
    family: 20,
    remote_ip4: 24,
    local_ip4: 28,
    remote_port: 64,
    local_port: 68,
};
const SOCK_OPS_OP: i16 = 0;
const SOCK_OPS_NEW_STATE: i16 = 8;
const SOCK_OPS_SK: i16 = 184;
const BPF_SOCK_MARK: i16 = 16;

/// `struct sk_msg_md`.
const SK_MSG: KeyFields = KeyFields {
    family: 16,
    remote_ip4: 20,
    local_ip4: 24,
    remote_port: 60,
    local_port: 64,
};
const SK_MSG_SIZE: i16 = 68;

/// Writes this end's key at `OWN` and its peer's at `PEER`, reading the context in `R6`.
/// Clobbers `R0`–`R5`.
fn write_keys(a: &mut Asm, f: &KeyFields) {
    a.mov(R1, R6).call(FN_GET_NETNS_COOKIE);
    a.store64(FP, OWN, R0).store64(FP, PEER, R0);
    a.load32(R2, R6, f.local_ip4);
    a.store32(FP, OWN + 8, R2).store32(FP, PEER + 12, R2);
    a.load32(R2, R6, f.remote_ip4);
    a.store32(FP, OWN + 12, R2).store32(FP, PEER + 8, R2);
    a.load32(R2, R6, f.local_port);
    a.store32(FP, OWN + 16, R2).store32(FP, PEER + 20, R2);
    // The remote port is the network-order half-word in the field's upper half.
    a.load32(R2, R6, f.remote_port).rsh32_imm(R2, 16).be16(R2);
    a.store32(FP, OWN + 20, R2).store32(FP, PEER + 16, R2);
}

/// Calls map `function` (lookup or delete) on the budget entry whose key is at stack
/// offset `key`.
fn on_budget(a: &mut Asm, budgets: BorrowedFd<'_>, key: i16, function: i32) {
    a.load_map(R1, budgets)
        .mov(R2, FP)
        .add_imm(R2, key.into())
        .call(function);
}

/// `sock_ops`: on connect, a marked socket joins the router map; on accept, a socket whose
/// peer is there (a router socket in the same namespace) joins the instance map. Both get
/// a fresh budget entry, which goes when the connection closes.
fn admit_program(
    router_ends: BorrowedFd<'_>,
    instance_ends: BorrowedFd<'_>,
    budgets: BorrowedFd<'_>,
    mark: u32,
) -> Vec<bpf::Insn> {
    let mut a = Asm::default();
    a.mov(R6, R1);
    a.load32(R2, R6, SOCK_OPS.family)
        .jne_imm(R2, AF_INET, "out");
    a.load32(R7, R6, SOCK_OPS_OP);
    a.jeq_imm(R7, OPS_ACTIVE_ESTABLISHED, "connected");
    a.jeq_imm(R7, OPS_PASSIVE_ESTABLISHED, "keys");
    a.jeq_imm(R7, OPS_STATE_CB, "keys");
    a.goto("out");
    a.label("connected");
    // Is it the router's?
    a.load64(R2, R6, SOCK_OPS_SK).jeq_imm(R2, 0, "out");
    a.load32(R2, R2, BPF_SOCK_MARK)
        .jne_imm(R2, mark as i32, "out");
    a.label("keys");
    write_keys(&mut a, &SOCK_OPS);
    a.jeq_imm(R7, OPS_STATE_CB, "state");
    a.store64_imm(FP, ZERO, 0);
    a.jeq_imm(R7, OPS_PASSIVE_ESTABLISHED, "accepted");
    a.load_map(R8, router_ends);
    a.goto("join");
    a.label("accepted");
    // From the router?
    on_budget(&mut a, budgets, PEER, FN_MAP_LOOKUP);
    a.jeq_imm(R0, 0, "out");
    a.load_map(R8, instance_ends);
    a.label("join");
    a.load_map(R1, budgets).mov(R2, FP).add_imm(R2, OWN.into());
    a.mov(R3, FP)
        .add_imm(R3, ZERO.into())
        .mov_imm(R4, BPF_ANY)
        .call(FN_MAP_UPDATE);
    a.jne_imm(R0, 0, "out");
    // Asked for state changes, so that the budget goes when the connection closes.
    a.mov(R1, R6)
        .mov_imm(R2, OPS_STATE_CB_FLAG)
        .call(FN_SOCK_OPS_CB_FLAGS_SET);
    a.mov(R1, R6)
        .mov(R2, R8)
        .mov(R3, FP)
        .add_imm(R3, OWN.into());
    a.mov_imm(R4, BPF_NOEXIST).call(FN_SOCK_HASH_UPDATE);
    a.goto("out");
    a.label("state");
    a.load32(R2, R6, SOCK_OPS_NEW_STATE)
        .jne_imm(R2, TCP_CLOSE, "out");
    on_budget(&mut a, budgets, OWN, FN_MAP_DELETE);
    a.label("out");
    a.mov_imm(R0, 1).exit();
    a.finish()
}

/// `sk_msg`, on every send of a socket in a map: while its budget lasts, the message goes
/// straight into the receive queue of its peer in `peers`; once it is spent, or the peer's
/// end is not there, this direction goes by TCP for good.
fn redirect_program(peers: BorrowedFd<'_>, budgets: BorrowedFd<'_>) -> Vec<bpf::Insn> {
    let mut a = Asm::default();
    a.mov(R6, R1);
    a.load32(R2, R6, SK_MSG.family).jne_imm(R2, AF_INET, "out");
    write_keys(&mut a, &SK_MSG);
    on_budget(&mut a, budgets, OWN, FN_MAP_LOOKUP);
    a.jeq_imm(R0, 0, "out");
    a.mov(R7, R0);
    a.load64(R8, R7, 0).load32(R2, R6, SK_MSG_SIZE).add(R8, R2);
    a.jgt_imm(R8, BUDGET as i32, "spent");
    a.mov(R1, R6)
        .load_map(R2, peers)
        .mov(R3, FP)
        .add_imm(R3, PEER.into());
    a.mov_imm(R4, BPF_F_INGRESS).call(FN_MSG_REDIRECT_HASH);
    a.jne_imm(R0, SK_PASS, "spent");
    a.store64(R7, 0, R8);
    a.goto("out");
    a.label("spent");
    // Sticky: a later redirect could overtake bytes that TCP has not delivered yet.
    a.mov_imm(R2, SPENT).store64(R7, 0, R2);
    a.label("out");
    a.mov_imm(R0, SK_PASS).exit();
    a.finish()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_on_hybrid_and_unified_hosts() {
        let hybrid = "25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            cgroup2_mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount_in(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let odd = "30 1 0:26 / /mnt/cg\\040two rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount_in(odd), Some(PathBuf::from("/mnt/cg two")));
        assert_eq!(
            cgroup2_mount_in("27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw\n"),
            None
        );
    }

    #[test]
    fn the_key_layouts_fit_the_stack_slots() {
        // Each key is 24 bytes and they must not overlap each other or the zero value.
        assert_eq!(OWN + KEY_SIZE as i16, 0);
        assert_eq!(PEER + KEY_SIZE as i16, OWN);
        assert_eq!(ZERO + 8, PEER);
    }
}
