//! Pump threads copy every instance's stdout and stderr into its log: each an epoll loop
//! over many instances' pipes, so an instance costs two registered descriptors instead of
//! a thread of its own (bench/density counted 1,015 daemon threads at 1,000 idle
//! services, one per instance). Past an instance's log rate its pipes leave the interest
//! set until the rate allows more, so the app blocks on a full pipe: a flood is paid for
//! by the app's own time, not the daemon's CPU.
//!
//! Each loop keeps its pipes, and the log files of instances that wrote in the last few
//! seconds, in a descriptor table of its own (`unshare(CLONE_FILES)`), not the daemon's:
//! `RLIMIT_NOFILE` bounds each table, and at ten thousand instances two pipes each would
//! take all of the daemon's. A loop takes instances up to a share of the limit; past it
//! another loop starts. Descriptors reach a loop over a socket (`SCM_RIGHTS`) and never
//! leave it, and nothing else runs on a loop's thread, so a descriptor number is only
//! ever used in the table it belongs to.
//!
//! This module owns the loops and the registrations; it must not format records, rotate
//! files or keep budgets (see [`crate::logs`]).

#![allow(unsafe_code)]

use crate::logs::{Bucket, LogFile, LogRate, Stream};
use rustix::event::{epoll, Timespec};
use rustix::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The token of the socket new instances arrive on (instances' start at 0, two each).
const ARRIVALS: u64 = u64::MAX;
/// Bytes read from one pipe per turn: a busy instance cannot starve the others.
const READ_CHUNK: usize = 64 * 1024;
/// Instances one loop takes at most (fewer where the descriptor limit is lower).
const MOST_PER_LOOP: usize = 4096;
/// Descriptors a loop keeps for itself: its epoll, its socket, stdin/out/err.
const LOOP_OWN: u64 = 16;
/// A log file quiet this long is closed; the next record opens it again.
const LOG_IDLE: Duration = if cfg!(test) {
    Duration::from_millis(200)
} else {
    Duration::from_secs(5)
};

/// Says when an instance's output has all been logged (both pipes at end of file).
pub struct PumpHandle {
    done: Arc<Done>,
}

#[derive(Default)]
struct Done {
    finished: Mutex<bool>,
    signal: Condvar,
}

impl Done {
    fn finish(&self) {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        *finished = true;
        self.signal.notify_all();
    }
}

impl PumpHandle {
    /// Waits until every byte the instance wrote is in its log.
    pub fn join(self) {
        let mut finished = self.done.finished.lock().unwrap_or_else(|p| p.into_inner());
        while !*finished {
            finished = self
                .done
                .signal
                .wait(finished)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// One instance's pipes and log, as the loop keeps them.
struct Pump {
    streams: [Stream; 2],
    log: LogFile,
    bucket: Option<Bucket>,
    tee: bool,
    /// Its pipes are out of the interest set until then (past its rate).
    paused_until: Option<Instant>,
    /// When it last had output (its log file is closed once this is old).
    active_at: Instant,
    done: Arc<Done>,
}

/// An instance on its way to a loop, but for its pipes (which travel on the socket).
struct Arrival {
    log: LogFile,
    rate: Option<LogRate>,
    tee: bool,
    done: Arc<Done>,
}

/// What a loop and those who hand it instances share: nothing that holds a descriptor.
#[derive(Default)]
struct Shared {
    /// In the order their pipes were sent.
    arriving: Mutex<VecDeque<Arrival>>,
    /// Instances handed to it and not yet finished.
    live: AtomicUsize,
}

/// A running loop, as the daemon's side holds it.
struct Loop {
    /// The daemon's end of the socket the pipes go over (in the daemon's table).
    socket: OwnedFd,
    shared: Arc<Shared>,
    capacity: usize,
}

/// The running loops (an attempt to start one that failed, out of threads or
/// descriptors, is tried again by the next instance).
static LOOPS: Mutex<Vec<Loop>> = Mutex::new(Vec::new());

/// How many instances a loop may take under the descriptor limit: per instance two pipes
/// and, while it writes, its log file.
fn capacity() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let room = (soft.saturating_sub(LOOP_OWN) / 3).max(1);
    usize::try_from(room)
        .unwrap_or(MOST_PER_LOOP)
        .min(MOST_PER_LOOP)
}

/// Starts a loop in a table of its own.
fn start() -> io::Result<Loop> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    let (socket, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let shared = Arc::new(Shared::default());
    let looping = Arc::clone(&shared);
    let keep = theirs.as_raw_fd();
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("skiff-logs".into())
        .spawn(move || match own_table(keep) {
            Ok(socket) => {
                let _ = started_tx.send(Ok(()));
                run(&socket, &looping);
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
        })?;
    let started = started_rx
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("the loop thread ended at start")));
    // The loop has its own copy now (or failed); this table's goes.
    drop(theirs);
    started?;
    Ok(Loop {
        socket,
        shared,
        capacity: capacity(),
    })
}

/// Gives the calling thread a descriptor table of its own holding only stdin, stdout,
/// stderr and `keep` (all else it copied is closed: a copy would keep the daemon's
/// sockets open after the daemon closed them); `keep`, as this table's.
fn own_table(keep: RawFd) -> io::Result<OwnedFd> {
    let keep = u32::try_from(keep).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: unshare and close_range act on this thread's descriptor table only, which
    // after the unshare no other thread uses, and nothing on this thread holds a
    // descriptor but `keep` (left open).
    unsafe {
        if libc::unshare(libc::CLONE_FILES) != 0 {
            return Err(io::Error::last_os_error());
        }
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
        Ok(OwnedFd::from_raw_fd(keep as RawFd))
    }
}

/// Starts logging an instance's `stdout` and `stderr` into `log` (at most `rate`; a
/// copy of the raw bytes to this process's own when `tee`), until both end. The pipes
/// move to a loop's table: this process's copies are closed when it returns.
pub fn spawn(
    stdout: OwnedFd,
    stderr: OwnedFd,
    mut log: LogFile,
    rate: Option<LogRate>,
    tee: bool,
) -> io::Result<PumpHandle> {
    // The loop opens it in its own table when there is something to write.
    log.close();
    let done = Arc::new(Done::default());
    let arrival = Arrival {
        log,
        rate,
        tee,
        done: Arc::clone(&done),
    };
    let mut loops = LOOPS.lock().unwrap_or_else(|p| p.into_inner());
    let free = loops
        .iter()
        .position(|l| l.shared.live.load(Ordering::Acquire) < l.capacity);
    let chosen = match free {
        Some(i) => &loops[i],
        None => {
            let started = start()
                .map_err(|e| io::Error::new(e.kind(), format!("starting a log pump: {e}")))?;
            loops.push(started);
            loops.last().expect("pushed above")
        }
    };
    chosen.shared.live.fetch_add(1, Ordering::AcqRel);
    let mut arriving = chosen
        .shared
        .arriving
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    arriving.push_back(arrival);
    if let Err(e) = send_pipes(&chosen.socket, &stdout, &stderr) {
        arriving.pop_back();
        chosen.shared.live.fetch_sub(1, Ordering::AcqRel);
        return Err(io::Error::new(
            e.kind(),
            format!("handing the output pipes to the log pump: {e}"),
        ));
    }
    Ok(PumpHandle { done })
}

fn send_pipes(socket: &OwnedFd, stdout: &OwnedFd, stderr: &OwnedFd) -> io::Result<()> {
    use rustix::fd::AsFd;
    let fds = [stdout.as_fd(), stderr.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for two descriptors"));
    }
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(&[1])],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// The next arrival's pipes, if one is waiting; `Err` with the socket's own error.
fn receive_pipes(socket: &OwnedFd) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = match rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    ) {
        Ok(got) => got,
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if got.bytes == 0 {
        return Err(io::Error::other("the daemon's end is closed"));
    }
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok(Some(fds))
}

/// Takes in every instance waiting on `socket`, each paired with its arrival.
fn take_arrivals(
    socket: &OwnedFd,
    shared: &Shared,
    epoll_fd: &OwnedFd,
    pumps: &mut HashMap<u64, Pump>,
    next_id: &mut u64,
    touched: &mut Vec<u64>,
) {
    loop {
        let fds = match receive_pipes(socket) {
            Ok(Some(fds)) => fds,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("the log pump cannot take instances: {e}");
                return;
            }
        };
        let arrival = shared
            .arriving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some(arrival) = arrival else {
            tracing::error!("the log pump got pipes for no instance");
            continue;
        };
        let Ok([stdout, stderr]) = <[OwnedFd; 2]>::try_from(fds) else {
            // Out of descriptors in this table: the output is lost, said once.
            tracing::warn!("the log pump did not get an instance's pipes");
            shared.live.fetch_sub(1, Ordering::AcqRel);
            arrival.done.finish();
            continue;
        };
        let id = *next_id;
        *next_id += 1;
        let mut pump = Pump {
            streams: [Stream::new(stdout, "stdout"), Stream::new(stderr, "stderr")],
            log: arrival.log,
            bucket: arrival.rate.map(|r| Bucket::new(r, Instant::now())),
            tee: arrival.tee,
            paused_until: None,
            active_at: Instant::now(),
            done: arrival.done,
        };
        watch(epoll_fd, id, &mut pump);
        pumps.insert(id, pump);
        touched.push(id);
    }
}

fn wait_for(at: Instant) -> Timespec {
    let wait = at.saturating_duration_since(Instant::now());
    Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    }
}

fn run(socket: &OwnedFd, shared: &Shared) {
    // Copying logs is background work: at the lowest priority, threads that serve
    // requests take the CPU first (on Linux this sets the calling thread's nice only).
    let _ = rustix::process::setpriority_process(None, 19);
    let epoll_fd = match epoll::create(epoll::CreateFlags::CLOEXEC).and_then(|e| {
        epoll::add(
            &e,
            socket,
            epoll::EventData::new_u64(ARRIVALS),
            epoll::EventFlags::IN,
        )
        .map(|()| e)
    }) {
        Ok(e) => e,
        Err(e) => {
            // Instances handed to it are never logged: say so loudly.
            tracing::error!("the log pump cannot start its loop: {e}");
            return;
        }
    };
    let mut pumps: HashMap<u64, Pump> = HashMap::new();
    // Paused pumps by when they may read again: only these are looked at for timers.
    let mut paused: BTreeSet<(Instant, u64)> = BTreeSet::new();
    let mut next_id = 0u64;
    let mut next_sweep = Instant::now() + LOG_IDLE;
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let wake_at = paused
            .first()
            .map_or(next_sweep, |&(at, _)| at.min(next_sweep));
        events.clear();
        match epoll::wait(
            &epoll_fd,
            rustix::buffer::spare_capacity(&mut events),
            Some(&wait_for(wake_at)),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                tracing::error!("the log pump cannot wait for output: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let mut touched = Vec::new();
        for event in &events {
            let token = event.data.u64();
            if token == ARRIVALS {
                take_arrivals(
                    socket,
                    shared,
                    &epoll_fd,
                    &mut pumps,
                    &mut next_id,
                    &mut touched,
                );
                continue;
            }
            let (id, which) = (token / 2, (token % 2) as usize);
            if let Some(pump) = pumps.get_mut(&id) {
                if pump.paused_until.is_none() {
                    if let Some(until) = read_once(&epoll_fd, pump, which, &mut buf) {
                        pause(&epoll_fd, pump, until);
                        paused.insert((until, id));
                    }
                    touched.push(id);
                }
            }
        }
        resume_due(&epoll_fd, &mut pumps, &mut paused, &mut touched);
        let now = Instant::now();
        for id in touched {
            let Some(pump) = pumps.get_mut(&id) else {
                continue;
            };
            pump.log.flush();
            pump.active_at = now;
            if pump.streams.iter().all(|s| s.fd.is_none()) {
                if let Some(ended) = pumps.remove(&id) {
                    finish(ended);
                    shared.live.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        if now >= next_sweep {
            close_quiet_logs(&mut pumps, now);
            next_sweep = now + LOG_IDLE;
        }
    }
}

/// Closes the log files of instances quiet for [`LOG_IDLE`].
fn close_quiet_logs(pumps: &mut HashMap<u64, Pump>, now: Instant) {
    for pump in pumps.values_mut() {
        if pump.log.is_open() && now.duration_since(pump.active_at) >= LOG_IDLE {
            pump.log.close();
        }
    }
}

/// Puts `pump`'s live pipes in the interest set, as tokens `2 * id` and `2 * id + 1`.
fn watch(epoll_fd: &OwnedFd, id: u64, pump: &mut Pump) {
    for (i, stream) in pump.streams.iter_mut().enumerate() {
        let Some(fd) = &stream.fd else { continue };
        let data = epoll::EventData::new_u64(id * 2 + i as u64);
        if let Err(e) = epoll::add(epoll_fd, fd, data, epoll::EventFlags::IN) {
            // Not watched, it could never end: its output is lost, said once.
            tracing::warn!(
                "the log pump cannot watch an instance's {}: {e}",
                stream.name
            );
            stream.fd = None;
        }
    }
}

/// Takes `pump`'s live pipes out of the interest set until `until`.
fn pause(epoll_fd: &OwnedFd, pump: &mut Pump, until: Instant) {
    for stream in &pump.streams {
        if let Some(fd) = &stream.fd {
            let _ = epoll::delete(epoll_fd, fd);
        }
    }
    pump.paused_until = Some(until);
}

/// Watches again the pumps whose pause is over.
fn resume_due(
    epoll_fd: &OwnedFd,
    pumps: &mut HashMap<u64, Pump>,
    paused: &mut BTreeSet<(Instant, u64)>,
    touched: &mut Vec<u64>,
) {
    let now = Instant::now();
    while let Some(&(at, id)) = paused.first() {
        if at > now {
            break;
        }
        paused.pop_first();
        if let Some(pump) = pumps.get_mut(&id) {
            pump.paused_until = None;
            watch(epoll_fd, id, pump);
            touched.push(id);
        }
    }
}

/// Reads what pipe `which` of `pump` holds (one chunk) and logs it; at its end, the pipe
/// leaves the interest set. Past the rate, when the pump may read again.
fn read_once(epoll_fd: &OwnedFd, pump: &mut Pump, which: usize, buf: &mut [u8]) -> Option<Instant> {
    let stream = &mut pump.streams[which];
    let fd = stream.fd.as_ref()?;
    match rustix::io::read(fd, &mut *buf) {
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => None,
        Ok(0) | Err(_) => {
            let _ = epoll::delete(epoll_fd, fd);
            stream.fd = None;
            stream.flush_rest(&mut pump.log);
            None
        }
        Ok(n) => {
            if pump.tee {
                crate::logs::tee(which, &buf[..n]);
            }
            stream.take(&buf[..n], &mut pump.log);
            // Past the rate, the pipes are left unread: the app blocks on them.
            let wait = pump
                .bucket
                .as_mut()
                .map_or(Duration::ZERO, |b| b.take(n, Instant::now()));
            (!wait.is_zero()).then(|| Instant::now() + wait)
        }
    }
}

fn finish(mut pump: Pump) {
    pump.log.close();
    pump.done.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pump_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "skiff-logs")
            .count()
    }

    /// Where the descriptors of each loop's table point.
    fn loop_tables() -> Vec<String> {
        let mut links = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != "skiff-logs" {
                continue;
            }
            for fd in std::fs::read_dir(task.path().join("fd"))
                .into_iter()
                .flatten()
            {
                if let Ok(link) = std::fs::read_link(fd.unwrap().path()) {
                    links.push(link.to_string_lossy().into_owned());
                }
            }
        }
        links
    }

    fn this_table() -> Vec<String> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .map(|link| link.to_string_lossy().into_owned())
            .collect()
    }

    fn eventually(what: &str, mut holds: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !holds() {
            assert!(Instant::now() < deadline, "not within 10 s: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn pipes_move_to_the_loops_own_table_and_a_quiet_log_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let (out_r, out_w) = rustix::pipe::pipe().unwrap();
        let (err_r, err_w) = rustix::pipe::pipe().unwrap();
        let pipe = format!("pipe:[{}]", rustix::fs::fstat(&out_r).unwrap().st_ino);
        let path = dir.path().join("quiet.log");
        let log = LogFile::new(path.clone(), std::fs::File::create(&path).unwrap(), 0);
        let ends_here = || this_table().iter().filter(|l| **l == pipe).count();
        assert_eq!(ends_here(), 2);
        let handle = spawn(out_r, err_r, log, None, false).unwrap();
        assert_eq!(ends_here(), 1, "only the app's end is left in this table");
        eventually("a loop holds the pipe", || loop_tables().contains(&pipe));

        let logged = |text: &str| {
            std::fs::read_to_string(&path)
                .unwrap()
                .contains(&format!("stdout F {text}"))
        };
        let log_name = path.to_string_lossy().into_owned();
        rustix::io::write(&out_w, b"first\n").unwrap();
        eventually("the first line is logged", || logged("first"));
        eventually("the quiet log is closed", || {
            !loop_tables().contains(&log_name)
        });
        assert!(!this_table().contains(&log_name));
        rustix::io::write(&out_w, b"second\n").unwrap();
        eventually("the next line opens it again", || logged("second"));
        drop((out_w, err_w));
        handle.join();
        assert!(
            !loop_tables().contains(&pipe),
            "the loop closed the ended pipe"
        );
    }

    #[test]
    fn one_thread_logs_many_instances_each_into_its_own_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut running = Vec::new();
        for i in 0..20 {
            let (out_r, out_w) = rustix::pipe::pipe().unwrap();
            let (err_r, err_w) = rustix::pipe::pipe().unwrap();
            let path = dir.path().join(format!("{i}.log"));
            let file = std::fs::File::create(&path).unwrap();
            let log = LogFile::new(path.clone(), file, 0);
            let handle = spawn(out_r, err_r, log, None, false).unwrap();
            running.push((path, handle, out_w, err_w));
        }
        let mut ended = Vec::new();
        for (i, (path, handle, out_w, err_w)) in running.into_iter().enumerate() {
            for n in 0..50 {
                rustix::io::write(&out_w, format!("out {i} {n}\n").as_bytes()).unwrap();
            }
            // A last line without its end is logged whole when the pipe closes.
            rustix::io::write(&err_w, format!("err {i} unended").as_bytes()).unwrap();
            drop((out_w, err_w));
            ended.push((i, path, handle));
        }
        for (i, path, handle) in ended {
            handle.join();
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 51, "{path:?}: {text}");
            let outs: Vec<String> = lines
                .iter()
                .filter(|l| l.contains(" stdout F "))
                .map(|l| l.rsplit(" F ").next().unwrap().to_owned())
                .collect();
            let wanted: Vec<String> = (0..50).map(|n| format!("out {i} {n}")).collect();
            assert_eq!(
                outs, wanted,
                "each instance's lines, in order, in its own log"
            );
            assert!(lines
                .iter()
                .any(|l| l.ends_with(&format!("stderr F err {i} unended"))));
        }
        // Counted once it has done work: a new thread names itself as it starts.
        assert_eq!(pump_threads(), 1, "one pump thread for every instance");
    }
}
