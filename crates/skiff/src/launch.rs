//! What `skiff run` and the daemon share about launching instances: the sandbox runtime,
//! parsing quantities and durations from flags, instance ids, and reclaiming the leftovers of instances
//! whose supervisor died.

use skiff_sandbox::{NetworkSlot, Sandbox};
use skiff_store::Store;
use std::path::Path;
use std::time::Duration;

/// The sandbox runtime for this data directory; its sandboxes are cloned by a zygote
/// started from this very binary (`skiff_sandbox::reentry`), so none holds this
/// process's memory.
pub fn sandbox(home: &crate::home::Home) -> anyhow::Result<Sandbox> {
    use anyhow::Context;
    let binary = skiff_sandbox::reentry::own_binary()
        .context("opening skiff's own binary (/proc/self/exe) for its sandboxes")?;
    Sandbox::new(&home.scope())
        .context("preparing the sandbox runtime")?
        .with_zygote(&binary)
        .context("preparing the sandbox runtime")
}

pub fn parse_memory(s: &str) -> Result<u64, String> {
    skiff_core::parse_memory_bytes(s).map_err(|e| e.to_string())
}

pub fn parse_cpu(s: &str) -> Result<u64, String> {
    skiff_core::parse_cpu_millis(s).map_err(|e| e.to_string())
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: want e.g. 10s, 500ms, 1m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration {s:?}: unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A random instance id: `prefix` and 12 hex digits.
pub fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("the kernel's random source is available");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Cleans up after instances whose supervisor died (their processes died with it, by the
/// parent-death signal) and marks them lost, freeing their network slots.
pub fn reclaim_lost(db: &mut Store, sandbox: &Sandbox, run_dir: &Path) -> anyhow::Result<()> {
    for inst in db.running_instances()? {
        let alive = match (
            process_start_time(inst.supervisor_pid),
            inst.supervisor_start,
        ) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !alive {
            if sandbox.reclaim(&inst.id, run_dir, inst.net_slot.map(NetworkSlot::new)) {
                tracing::warn!(instance = %inst.id, "reclaimed the leftovers of a lost instance");
            }
            db.finish_instance(&inst.id, None)?;
        }
    }
    Ok(())
}

/// Reclaims every cgroup and scratch directory under this data directory's scope that
/// no running instance owns: what a daemon killed mid-start left, or one whose row says
/// it ended. Only for a daemon holding the data directory's lock (instances being made
/// by another process would look unowned).
pub fn reclaim_unowned(db: &Store, sandbox: &Sandbox, run_dir: &Path) -> anyhow::Result<()> {
    let owned: std::collections::HashSet<String> =
        db.running_instances()?.into_iter().map(|i| i.id).collect();
    let reclaimed = sandbox.reclaim_unowned(run_dir, &owned);
    if !reclaimed.is_empty() {
        tracing::warn!(
            "reclaimed the leftovers of {} instances no row owns: {}",
            reclaimed.len(),
            reclaimed.join(", ")
        );
    }
    Ok(())
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22), or
/// `None` if there is no such process.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Where instances' scratch mount points live.
pub const RUN_DIR: &str = "/run/skiff/instances";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_tells_processes_apart() {
        let me = process_start_time(std::process::id()).expect("this process exists");
        assert_eq!(process_start_time(std::process::id()), Some(me));
        assert!(process_start_time(1).is_some_and(|init| init <= me));
        assert_eq!(process_start_time(u32::MAX), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5h").is_err() && parse_duration("x").is_err());
    }
}
