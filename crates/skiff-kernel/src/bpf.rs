//! The little of eBPF that the upstream shortcut needs: the `bpf(2)` commands to create a
//! map, load a program and attach it, and an assembler for the instructions.
//!
//! Written by hand so that building skiff needs no BPF compiler and the daemon no ELF
//! loader: the shortcut's programs are a few dozen instructions. This module knows the
//! kernel's ABI; it must not know what the programs do (that is `shortcut`).

#![allow(unsafe_code)]

use rustix::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::collections::HashMap;
use std::io;

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_LINK_CREATE: libc::c_int = 28;

/// A register: `R0` return value, `R1`–`R5` arguments (clobbered by calls), `R6`–`R9`
/// kept across calls, `R10` the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(u8);
pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const FP: Reg = Reg(10);

/// One instruction, as `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// Instruction classes, sizes, modes and operations (linux/bpf_common.h, linux/bpf.h).
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const LD: u8 = 0x00;
const JMP: u8 = 0x05;
const ALU: u8 = 0x04;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const DW: u8 = 0x18;
const MEM: u8 = 0x60;
const IMM: u8 = 0x00;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const RSH: u8 = 0x70;
const MOV: u8 = 0xb0;
const END: u8 = 0xd0;
const TO_BE: u8 = 0x08;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JGT: u8 = 0x20;
const JNE: u8 = 0x50;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load that names a map by file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src.0 << 4) | dst.0,
        off,
        imm,
    }
}

/// A program being written: instructions plus jumps to named labels, resolved by
/// [`Asm::finish`].
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<&'static str, usize>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    fn jump(&mut self, op: u8, dst: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), to));
        self.push(insn(JMP | op | K, dst, R0, 0, imm))
    }

    /// Marks where `name` jumps to: the next instruction.
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        let previous = self.labels.insert(name, self.insns.len());
        assert!(previous.is_none(), "label {name} placed twice");
        self
    }

    /// `dst = src`
    pub fn mov(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(insn(ALU64 | MOV | X, dst, src, 0, 0))
    }

    /// `dst = imm`
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(ALU64 | MOV | K, dst, R0, 0, imm))
    }

    /// `dst += imm`
    pub fn add_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(ALU64 | ADD | K, dst, R0, 0, imm))
    }

    /// `dst += src`
    pub fn add(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(insn(ALU64 | ADD | X, dst, src, 0, 0))
    }

    /// `dst >>= imm` (32 bits)
    pub fn rsh32_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(ALU | RSH | K, dst, R0, 0, imm))
    }

    /// `dst = htobe16(dst)`: swaps the two low bytes on a little-endian host.
    pub fn be16(&mut self, dst: Reg) -> &mut Self {
        self.push(insn(ALU | END | TO_BE, dst, R0, 0, 16))
    }

    /// `dst = *(u32 *)(src + off)`
    pub fn load32(&mut self, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(insn(LDX | MEM | W, dst, src, off, 0))
    }

    /// `dst = *(u64 *)(src + off)`
    pub fn load64(&mut self, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(insn(LDX | MEM | DW, dst, src, off, 0))
    }

    /// `*(u32 *)(dst + off) = src`
    pub fn store32(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(insn(STX | MEM | W, dst, src, off, 0))
    }

    /// `*(u64 *)(dst + off) = src`
    pub fn store64(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(insn(STX | MEM | DW, dst, src, off, 0))
    }

    /// `*(u64 *)(dst + off) = imm`
    pub fn store64_imm(&mut self, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(insn(ST | MEM | DW, dst, R0, off, imm))
    }

    /// `dst = &map` (two instruction slots).
    pub fn load_map(&mut self, dst: Reg, map: BorrowedFd<'_>) -> &mut Self {
        self.push(insn(
            LD | DW | IMM,
            dst,
            Reg(PSEUDO_MAP_FD),
            0,
            map.as_raw_fd(),
        ));
        self.push(insn(0, R0, R0, 0, 0))
    }

    /// `goto to`
    pub fn goto(&mut self, to: &'static str) -> &mut Self {
        self.jump(JA, R0, 0, to)
    }

    /// `if dst == imm goto to`
    pub fn jeq_imm(&mut self, dst: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jump(JEQ, dst, imm, to)
    }

    /// `if dst != imm goto to`
    pub fn jne_imm(&mut self, dst: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jump(JNE, dst, imm, to)
    }

    /// `if dst > imm goto to` (unsigned)
    pub fn jgt_imm(&mut self, dst: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jump(JGT, dst, imm, to)
    }

    /// Calls kernel helper `id`: arguments in `R1`–`R5`, result in `R0`.
    pub fn call(&mut self, id: i32) -> &mut Self {
        self.push(insn(JMP | CALL, R0, R0, 0, id))
    }

    /// Returns `R0`.
    pub fn exit(&mut self) -> &mut Self {
        self.push(insn(JMP | EXIT, R0, R0, 0, 0))
    }

    /// The instructions, with every jump pointed at its label.
    ///
    /// # Panics
    /// On a jump to a label never placed: a mistake in the program's source.
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, to) in std::mem::take(&mut self.jumps) {
            let target = *self
                .labels
                .get(to)
                .unwrap_or_else(|| panic!("jump to label {to}, which is never placed"));
            self.insns[at].off = i16::try_from(target as isize - at as isize - 1)
                .expect("a jump within a short program");
        }
        self.insns
    }
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised `#[repr(C)]` prefix of `union bpf_attr`
    // for `cmd`, and its size is passed along; the kernel zero-extends the rest.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_result(cmd: libc::c_int, attr: &mut impl Sized) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Map types used here.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum MapType {
    Hash = 1,
    SockHash = 18,
}

/// Program types used here.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum ProgType {
    SockOps = 13,
    SkMsg = 16,
}

/// Attach points used here.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum AttachType {
    CgroupSockOps = 3,
    SkMsgVerdict = 7,
}

/// `map_flags`: entries are allocated as they are added, not all up front.
pub const NO_PREALLOC: u32 = 1;

/// Creates a map.
pub fn create_map(
    kind: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    fd_result(
        BPF_MAP_CREATE,
        &mut Attr {
            map_type: kind as u32,
            key_size,
            value_size,
            max_entries,
            map_flags,
        },
    )
}

/// Loads a program, named `name` in `bpftool prog`. A refusal carries the verifier's log.
pub fn load_program(kind: ProgType, name: &str, insns: &[Insn]) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
    }
    // Only GPL-compatible programs may call the socket map helpers.
    const LICENSE: &[u8] = b"GPL\0";
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = Attr {
        prog_type: kind as u32,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
    };
    fd_result(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let log = String::from_utf8_lossy(&log[..end]);
        let tail: Vec<&str> = log.lines().rev().take(4).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::new(
            e.kind(),
            format!(
                "loading BPF program {name}: {e}; verifier: {}",
                tail.join(" | ")
            ),
        )
    })
}

/// Attaches `prog` to `target` (a map, for socket-map programs), for as long as `target`
/// lives.
pub fn attach(prog: BorrowedFd<'_>, target: BorrowedFd<'_>, kind: AttachType) -> io::Result<()> {
    #[repr(C)]
    struct Attr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
    }
    bpf(
        BPF_PROG_ATTACH,
        &mut Attr {
            target_fd: target.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type: kind as u32,
            attach_flags: 0,
        },
    )
    .map(drop)
}

/// Attaches `prog` to `target` (a cgroup directory) through a link: the program is
/// detached when the returned descriptor closes, so a daemon that dies leaves nothing
/// attached. Other programs attached there keep running.
pub fn link(prog: BorrowedFd<'_>, target: BorrowedFd<'_>, kind: AttachType) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
    }
    fd_result(
        BPF_LINK_CREATE,
        &mut Attr {
            prog_fd: prog.as_raw_fd() as u32,
            target_fd: target.as_raw_fd() as u32,
            attach_type: kind as u32,
            flags: 0,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        let mut a = Asm::default();
        a.mov(R6, R1).load32(R2, R6, 20).jne_imm(R2, 2, "out");
        a.store32(FP, -12, R2).be16(R2).call(122);
        a.label("out").mov_imm(R0, 1).exit();
        let p = a.finish();
        let raw: Vec<(u8, u8, i16, i32)> =
            p.iter().map(|i| (i.code, i.regs, i.off, i.imm)).collect();
        assert_eq!(
            raw,
            [
                (0xbf, 0x16, 0, 0),   // r6 = r1
                (0x61, 0x62, 20, 0),  // r2 = *(u32 *)(r6 + 20)
                (0x55, 0x02, 3, 2),   // if r2 != 2 goto +3
                (0x63, 0x2a, -12, 0), // *(u32 *)(r10 - 12) = r2
                (0xdc, 0x02, 0, 16),  // r2 = be16 r2
                (0x85, 0x00, 0, 122), // call 122
                (0xb7, 0x00, 0, 1),   // r0 = 1
                (0x95, 0x00, 0, 0),   // exit
            ]
        );
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    #[test]
    fn a_backward_jump_gets_a_negative_offset() {
        let mut a = Asm::default();
        a.label("top").mov_imm(R0, 0).goto("top");
        assert_eq!(a.finish()[1].off, -2);
    }

    #[test]
    #[should_panic(expected = "never placed")]
    fn a_jump_to_a_missing_label_is_a_bug() {
        let mut a = Asm::default();
        a.goto("nowhere");
        a.finish();
    }
}
