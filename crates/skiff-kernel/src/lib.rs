//! Linux kernel interfaces that need `unsafe`, kept apart so the crates that use them can
//! forbid unsafe code: the eBPF upstream shortcut (`bpf(2)`, the hand-assembled `sock_ops`
//! and `sk_msg` programs, the sockmaps), socket marks, reading a socket into uninitialised
//! memory, waiting on a process's pidfd, watching a directory with inotify; and the descriptor budget (`RLIMIT_NOFILE`).
//!
//! This crate knows nothing of services, routing or sandboxes; it wraps kernel objects.
#![deny(unsafe_code)]

mod bpf;
pub mod descriptors;
pub mod dirwatch;
pub mod pidfd;
pub mod recv;
pub mod shortcut;
pub mod sockopt;

pub use shortcut::{Shortcut, ShortcutError};
