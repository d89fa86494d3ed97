//! A stack for a process cloned to share its creator's memory (`CLONE_VM`), in the
//! creator's frame, and the signal mask such a clone is made under. It owns only the
//! stack's memory and the mask; what runs on the stack is its caller's.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

/// `N` bytes of stack, aligned as the ABI wants a stack's top. Not zeroed when made:
/// writing it would copy pages for nothing, and the child writes what it uses before
/// reading it.
#[repr(C, align(16))]
pub(crate) struct ChildStack<const N: usize>(MaybeUninit<[u8; N]>);

impl<const N: usize> ChildStack<N> {
    pub(crate) fn new() -> Self {
        ChildStack(MaybeUninit::uninit())
    }

    /// The stack's top (stacks grow down), for `clone`.
    pub(crate) fn top(&mut self) -> *mut libc::c_void {
        // SAFETY: one past the end of this array, which a pointer may be.
        unsafe { self.0.as_mut_ptr().cast::<u8>().add(N).cast() }
    }
}

/// Blocks every signal in the calling thread, so that none of its handlers can run in a
/// child cloned next (which starts with this mask) on memory it shares; the mask it had.
pub(crate) fn block_every_signal() -> libc::sigset_t {
    // SAFETY: signal-set and mask calls on local sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_is_the_aligned_end_of_the_stack() {
        let mut stack = ChildStack::<4096>::new();
        let start = stack.0.as_ptr() as usize;
        let top = stack.top() as usize;
        assert_eq!(top - start, 4096);
        assert_eq!(top % 16, 0);
    }

    #[test]
    fn every_signal_is_blocked_until_the_mask_is_put_back() {
        let before = block_every_signal();
        // SAFETY: reading and restoring this thread's mask.
        unsafe {
            let mut now: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut now);
            assert_eq!(libc::sigismember(&now, libc::SIGTERM), 1);
            assert_eq!(libc::sigismember(&now, libc::SIGUSR1), 1);
            libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut now);
            assert_eq!(libc::sigismember(&now, libc::SIGUSR1), 0);
        }
    }
}
