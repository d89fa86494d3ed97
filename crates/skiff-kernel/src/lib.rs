//! Linux kernel interfaces that need `unsafe` and an async runtime, kept apart so the
//! crates that use them can forbid unsafe code: waiting on a process's pidfd.
//!
//! This crate knows nothing of services, routing or sandboxes; it wraps kernel objects.
#![deny(unsafe_code)]

pub mod pidfd;
