//! The process's file descriptor budget (`RLIMIT_NOFILE`): raising the soft limit to the
//! hard one at start, counting what is open, telling exhaustion (`EMFILE`, `ENFILE`)
//! from other errors, and a spare descriptor that can be given up for a moment so that a
//! server out of descriptors can still accept a connection to refuse it.
//!
//! An idle instance costs the daemon's own table one descriptor (its pidfd; its log pipes
//! live in the log pump's tables), a prepared sandbox or a starting instance a few more,
//! and every connection one: at Debian's default soft limit of 1024 that is a few hundred
//! services.

use std::fs::File;
use std::io;
use std::sync::Mutex;

/// The soft and hard `RLIMIT_NOFILE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// What applies now.
    pub soft: u64,
    /// What the soft limit may be raised to without privilege.
    pub hard: u64,
}

/// The limit in force.
pub fn limit() -> Limit {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    Limit {
        soft: l.current.unwrap_or(u64::MAX),
        hard: l.maximum.unwrap_or(u64::MAX),
    }
}

/// Raises the soft limit to the hard one (as systemd advises for servers that need many
/// descriptors and use no `select(2)`); returns the limit in force afterwards.
pub fn raise_soft_limit() -> io::Result<Limit> {
    let l = limit();
    if l.soft < l.hard {
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(l.hard),
                maximum: Some(l.hard),
            },
        )?;
    }
    Ok(limit())
}

/// Descriptors this process has open. Linux 6.2 and later give the count as the size of
/// `/proc/self/fd` (from the table's bitmap: one `stat`, whatever the count); before,
/// the size is 0 and the entries are counted, less the one the count itself opens, at
/// about half a microsecond each (0.5 ms for 1,000): not for every cold start.
pub fn open_count() -> io::Result<u64> {
    let size = std::fs::metadata("/proc/self/fd")?.len();
    if size > 0 {
        return Ok(size);
    }
    let n = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(n.saturating_sub(1))
}

/// Whether `e` says the process (`EMFILE`) or the system (`ENFILE`) is out of descriptors.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == libc::EMFILE || code == libc::ENFILE
    )
}

/// What to do about a daemon out of descriptors.
pub const ADVICE: &str =
    "raise the limit (ulimit -n, systemd's LimitNOFILE=) or run fewer instances";

/// Too few descriptors left for what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "out of file descriptors: the daemon has {open} open of its limit of {limit} \
     (RLIMIT_NOFILE), and keeps {reserve} for connections; {}",
    ADVICE
)]
pub struct Exhausted {
    /// Descriptors open.
    pub open: u64,
    /// The soft limit.
    pub limit: u64,
    /// What is kept back for other work.
    pub reserve: u64,
}

/// What a server with `limit` descriptors keeps back from long-lived users for
/// connections and files: an eighth, at least 64 and at most 1,024.
pub fn reserve_for(limit: u64) -> u64 {
    (limit / 8).clamp(64, 1024)
}

/// Checks that more than `reserve` descriptors are still free, so that new long-lived
/// users (an instance's pipes and sockets) never take the last ones that accepting a
/// connection or opening the database needs.
///
/// The kernel hands out the lowest free number, so the number a new descriptor gets is a
/// lower bound of how many are open, for the price of one `open(2)`: only when it is past
/// half of what may be used is the exact count taken (see [`RECOUNT_AFTER`]).
pub fn check_headroom(reserve: u64) -> Result<(), Exhausted> {
    let limit = limit().soft;
    let lowest_free = match File::open("/dev/null") {
        Ok(f) => std::os::fd::AsRawFd::as_raw_fd(&f) as u64,
        Err(e) if is_exhaustion(&e) => limit,
        Err(_) => 0,
    };
    // Far below the line (half of what may be used), holes in the table could not hide
    // enough descriptors to matter: the lowest ones are filled first.
    if lowest_free < limit.saturating_sub(reserve) / 2 {
        return Ok(());
    }
    let short = |open: u64| open.saturating_add(reserve) >= limit;
    if let Some(open) = recent_shortage().filter(|n| short(*n)) {
        return Err(Exhausted {
            open,
            limit,
            reserve,
        });
    }
    let open = match open_count() {
        Ok(n) => n,
        Err(e) if is_exhaustion(&e) => limit,
        Err(_) => return Ok(()),
    };
    if short(open) {
        *LAST_SHORT.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), open));
        return Err(Exhausted {
            open,
            limit,
            reserve,
        });
    }
    Ok(())
}

/// How long a count that found too few free stands in for a new one.
pub const RECOUNT_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// The count of the last check that failed, while younger than [`RECOUNT_AFTER`]: a
/// daemon out of descriptors is asked many times a second (by every revision), and each
/// exact count costs half a millisecond at a thousand. A check that passes is never
/// reused: what was free a moment ago may be taken now.
static LAST_SHORT: Mutex<Option<(std::time::Instant, u64)>> = Mutex::new(None);

fn recent_shortage() -> Option<u64> {
    let last = LAST_SHORT.lock().unwrap_or_else(|p| p.into_inner());
    last.filter(|(at, _)| at.elapsed() < RECOUNT_AFTER)
        .map(|(_, n)| n)
}

/// One descriptor held back (`/dev/null`, read-only) to be let go of when an `accept(2)`
/// fails for want of descriptors, so the waiting connection can be taken and refused
/// (rather than left to time out in the backlog while the accept loop fails).
pub struct Spare(Mutex<Option<File>>);

impl Spare {
    /// Takes the spare descriptor now, while there are some.
    pub fn new() -> Spare {
        Spare(Mutex::new(File::open("/dev/null").ok()))
    }

    /// Gives the spare descriptor back to the kernel; false when none was held (it
    /// could not be taken again since the last release).
    pub fn release(&self) -> bool {
        self.slot().take().is_some()
    }

    /// Takes a spare descriptor again, if one is free.
    pub fn retake(&self) {
        let mut slot = self.slot();
        if slot.is_none() {
            *slot = File::open("/dev/null").ok();
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<File>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Spare {
    fn default() -> Self {
        Spare::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_the_number_of_entries_in_the_table() {
        let files: Vec<File> = (0..300).map(|_| File::open("/dev/null").unwrap()).collect();
        let counted = open_count().unwrap();
        let listed = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64 - 1;
        drop(files);
        // Other test threads open and close a few of their own meanwhile.
        assert!(
            counted.abs_diff(listed) <= 16 && counted > 300,
            "counted {counted}, listed {listed}"
        );
    }

    #[test]
    fn counting_sees_a_new_descriptor() {
        // Other test threads open and close a few descriptors of their own meanwhile
        // (one file less of theirs once hid the one more here): open many, so the count
        // must move by far more than they could take back.
        const OPENED: u64 = 64;
        let before = open_count().unwrap();
        let files: Vec<File> = (0..OPENED)
            .map(|_| File::open("/dev/null").unwrap())
            .collect();
        let after = open_count().unwrap();
        drop(files);
        assert!(
            after >= before + OPENED / 2,
            "{before} then {after} with {OPENED} more open"
        );
    }

    #[test]
    fn exhaustion_is_emfile_or_enfile_only() {
        assert!(is_exhaustion(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_exhaustion(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(libc::ENOMEM)));
        assert!(!is_exhaustion(&io::Error::other("x")));
    }

    #[test]
    fn headroom_fails_when_the_reserve_reaches_the_limit() {
        let l = limit();
        assert!(check_headroom(0).is_ok());
        let e = check_headroom(l.soft).unwrap_err();
        assert_eq!(e.limit, l.soft);
        assert!(e.to_string().contains("RLIMIT_NOFILE"), "{e}");
    }

    #[test]
    fn the_reserve_is_an_eighth_within_bounds() {
        assert_eq!(reserve_for(1024), 128);
        assert_eq!(reserve_for(256), 64);
        assert_eq!(reserve_for(1 << 20), 1024);
    }

    #[test]
    fn a_lent_spare_is_taken_back() {
        let spare = Spare::new();
        assert!(spare.release());
        assert!(!spare.release(), "released already");
        spare.retake();
        assert!(spare.release(), "taken again after the release");
    }
}
