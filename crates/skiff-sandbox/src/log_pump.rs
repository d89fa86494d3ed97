//! One thread pumps every instance's stdout and stderr into its log: an epoll loop over
//! all their pipes, so an instance costs two registered descriptors instead of a thread
//! of its own (bench/density counted 1,015 daemon threads at 1,000 idle services, one
//! per instance). Past an instance's log rate its pipes leave the interest set until
//! the rate allows more, so the app blocks on a full pipe: a flood is paid for by the
//! app's own time, not the daemon's CPU.
//!
//! This module owns the loop and the registrations; it must not format records, rotate
//! files or keep budgets (see [`crate::logs`]).

use crate::logs::{Bucket, LogFile, LogRate, Stream};
use rustix::event::{epoll, eventfd, EventfdFlags, Timespec};
use rustix::fd::OwnedFd;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The token of the loop's own wake-up descriptor (instances' start at 0, two each).
const WAKE: u64 = u64::MAX;
/// Bytes read from one pipe per turn: a busy instance cannot starve the others.
const READ_CHUNK: usize = 64 * 1024;

/// Says when an instance's output has all been logged (both pipes at end of file).
pub struct PumpHandle {
    done: Arc<Done>,
}

#[derive(Default)]
struct Done {
    finished: Mutex<bool>,
    signal: Condvar,
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
    done: Arc<Done>,
}

/// What the loop thread and those who hand it pumps share.
struct Shared {
    epoll: OwnedFd,
    wake: OwnedFd,
    arriving: Mutex<Vec<Pump>>,
}

/// The loop, once started (an attempt that failed, out of threads or descriptors, is
/// tried again by the next instance).
static LOOP: Mutex<Option<Arc<Shared>>> = Mutex::new(None);

/// The loop, started on first use.
fn shared() -> io::Result<Arc<Shared>> {
    let mut running = LOOP.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = running.as_ref() {
        return Ok(Arc::clone(shared));
    }
    let shared =
        start().map_err(|e| io::Error::new(e.kind(), format!("starting the log pump: {e}")))?;
    *running = Some(Arc::clone(&shared));
    Ok(shared)
}

fn start() -> io::Result<Arc<Shared>> {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
    epoll::add(
        &epoll,
        &wake,
        epoll::EventData::new_u64(WAKE),
        epoll::EventFlags::IN,
    )?;
    let shared = Arc::new(Shared {
        epoll,
        wake,
        arriving: Mutex::new(Vec::new()),
    });
    let looping = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("skiff-logs".into())
        .spawn(move || run(&looping))?;
    Ok(shared)
}

/// Starts logging an instance's `stdout` and `stderr` into `log` (at most `rate`; a
/// copy of the raw bytes to this process's own when `tee`), until both end.
pub fn spawn(
    stdout: OwnedFd,
    stderr: OwnedFd,
    log: LogFile,
    rate: Option<LogRate>,
    tee: bool,
) -> io::Result<PumpHandle> {
    let shared = shared()?;
    let done = Arc::new(Done::default());
    let pump = Pump {
        streams: [Stream::new(stdout, "stdout"), Stream::new(stderr, "stderr")],
        log,
        bucket: rate.map(|r| Bucket::new(r, Instant::now())),
        tee,
        paused_until: None,
        done: Arc::clone(&done),
    };
    shared
        .arriving
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(pump);
    rustix::io::write(&shared.wake, &1u64.to_ne_bytes())?;
    Ok(PumpHandle { done })
}

fn run(shared: &Shared) {
    // Copying logs is background work: at the lowest priority, threads that serve
    // requests take the CPU first (on Linux this sets the calling thread's nice only).
    let _ = rustix::process::setpriority_process(None, 19);
    let mut pumps: HashMap<u64, Pump> = HashMap::new();
    // Paused pumps by when they may read again: only these are looked at for timers.
    let mut paused: BTreeSet<(Instant, u64)> = BTreeSet::new();
    let mut next_id = 0u64;
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let timeout = paused.first().map(|&(at, _)| {
            let wait = at.saturating_duration_since(Instant::now());
            Timespec {
                tv_sec: wait.as_secs() as i64,
                tv_nsec: i64::from(wait.subsec_nanos()),
            }
        });
        events.clear();
        match epoll::wait(
            &shared.epoll,
            rustix::buffer::spare_capacity(&mut events),
            timeout.as_ref(),
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
            if token == WAKE {
                let mut count = [0u8; 8];
                let _ = rustix::io::read(&shared.wake, &mut count);
                let arriving =
                    std::mem::take(&mut *shared.arriving.lock().unwrap_or_else(|p| p.into_inner()));
                for pump in arriving {
                    let id = next_id;
                    next_id += 1;
                    let mut pump = pump;
                    watch(shared, id, &mut pump);
                    pumps.insert(id, pump);
                    touched.push(id);
                }
                continue;
            }
            let (id, which) = (token / 2, (token % 2) as usize);
            if let Some(pump) = pumps.get_mut(&id) {
                if pump.paused_until.is_none() {
                    if let Some(until) = read_once(shared, pump, which, &mut buf) {
                        pause(shared, pump, until);
                        paused.insert((until, id));
                    }
                    touched.push(id);
                }
            }
        }
        resume_due(shared, &mut pumps, &mut paused, &mut touched);
        for id in touched {
            let Some(pump) = pumps.get_mut(&id) else {
                continue;
            };
            pump.log.flush();
            if pump.streams.iter().all(|s| s.fd.is_none()) {
                if let Some(ended) = pumps.remove(&id) {
                    finish(ended);
                }
            }
        }
    }
}

/// Puts `pump`'s live pipes in the interest set, as tokens `2 * id` and `2 * id + 1`.
fn watch(shared: &Shared, id: u64, pump: &mut Pump) {
    for (i, stream) in pump.streams.iter_mut().enumerate() {
        let Some(fd) = &stream.fd else { continue };
        let data = epoll::EventData::new_u64(id * 2 + i as u64);
        if let Err(e) = epoll::add(&shared.epoll, fd, data, epoll::EventFlags::IN) {
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
fn pause(shared: &Shared, pump: &mut Pump, until: Instant) {
    for stream in &pump.streams {
        if let Some(fd) = &stream.fd {
            let _ = epoll::delete(&shared.epoll, fd);
        }
    }
    pump.paused_until = Some(until);
}

/// Watches again the pumps whose pause is over.
fn resume_due(
    shared: &Shared,
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
            watch(shared, id, pump);
            touched.push(id);
        }
    }
}

/// Reads what pipe `which` of `pump` holds (one chunk) and logs it; at its end, the pipe
/// leaves the interest set. Past the rate, when the pump may read again.
fn read_once(shared: &Shared, pump: &mut Pump, which: usize, buf: &mut [u8]) -> Option<Instant> {
    let stream = &mut pump.streams[which];
    let fd = stream.fd.as_ref()?;
    match rustix::io::read(fd, &mut *buf) {
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => None,
        Ok(0) | Err(_) => {
            let _ = epoll::delete(&shared.epoll, fd);
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
    pump.log.flush();
    let mut finished = pump.done.finished.lock().unwrap_or_else(|p| p.into_inner());
    *finished = true;
    pump.done.signal.notify_all();
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
