//! Read buffers shared by the connections of one router thread.
//!
//! A connection holds a read buffer only while a message is in flight; an idle kept-alive
//! connection (client or instance side) gives its buffer back here, so ten thousand idle
//! clients cost ten thousand sockets, not ten thousand 16 KiB buffers. Buffers stay on
//! the thread that used them (no locking) and a bounded number are kept.
//!
//! This module must not hold anything but empty buffers (and one scratch buffer per
//! thread for bytes that are dropped as they are read).

use std::cell::RefCell;

/// Capacity of a new read buffer.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Buffers kept per thread; more are freed.
const KEPT: usize = 256;
/// Buffers grown past this are freed rather than kept.
const LARGEST_KEPT: usize = 4 * READ_CHUNK;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static SINK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the thread's scratch buffer for bytes read only to be dropped.
pub(crate) fn with_sink<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    SINK.with(|sink| {
        let mut sink = sink.borrow_mut();
        if sink.is_empty() {
            sink.resize(READ_CHUNK, 0);
        }
        f(&mut sink)
    })
}

/// An empty buffer with room for at least [`READ_CHUNK`] bytes.
pub(crate) fn take() -> Vec<u8> {
    FREE.with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
}

/// Returns `buf` for reuse by another connection of this thread.
pub(crate) fn give(mut buf: Vec<u8>) {
    if buf.capacity() < READ_CHUNK || buf.capacity() > LARGEST_KEPT {
        return;
    }
    buf.clear();
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEPT {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_empty_and_oversized_ones_are_dropped() {
        let mut a = take();
        a.extend_from_slice(b"leftover");
        let ptr = a.as_ptr();
        give(a);
        let b = take();
        assert_eq!((b.as_ptr(), b.len()), (ptr, 0));
        give(Vec::with_capacity(LARGEST_KEPT + 1));
        give(b);
        assert!(take().capacity() <= LARGEST_KEPT);
        assert!(take().capacity() >= READ_CHUNK);
    }
}
