//! The scheduler: one task that sleeps until the next schedule is due, makes its event
//! (type `dev.knative.sources.ping`, as Knative's PingSource, source
//! `/skiff/schedules/NAME`, time the scheduled time) and stores its delivery, then
//! notes the run. A run is keyed by its schedule and time, so a run stored twice (a
//! crash between storing it and noting it) is delivered once.
//!
//! Missed runs: a run late while the daemon was busy is made at once, but runs passed
//! over meanwhile are not; at start, the runs missed while it was down are caught up
//! once ([`skiff_events::Schedule::on_start`]). A schedule made or changed starts from now.

use super::{schedule_origin, Outbound};
use crate::invocations::{new_id, unix_ms, Emitter};
use crate::Control;
use skiff_core::ScheduleSpec;
use skiff_events::Schedule;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// The CloudEvents type of a schedule's events (Knative PingSource's).
pub const PING_TYPE: &str = "dev.knative.sources.ping";
/// The longest the scheduler sleeps without looking (the wall clock may jump).
const LONGEST_SLEEP: Duration = Duration::from_secs(30);

/// What the control plane holds of the scheduler: a way to wake it after a change,
/// and each schedule's next run for `describe`.
#[derive(Default)]
pub(crate) struct Scheduler {
    changed: Notify,
    next_runs: Mutex<HashMap<String, i64>>,
}

impl Scheduler {
    /// Schedules changed: read them again.
    pub(crate) fn reload(&self) {
        self.changed.notify_one();
    }

    /// When `name` runs next (Unix milliseconds), once the scheduler has planned it.
    pub(crate) fn next_run(&self, name: &str) -> Option<i64> {
        let runs = self.next_runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(name).copied()
    }

    fn publish_plan(&self, plans: &HashMap<String, Plan>) {
        let mut runs = self.next_runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.clear();
        for (name, plan) in plans {
            if let Some(next) = plan.next {
                runs.insert(name.clone(), unix_ms(next));
            }
        }
    }
}

/// One schedule as planned.
struct Plan {
    spec: ScheduleSpec,
    schedule: Schedule,
    next: Option<SystemTime>,
}

fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Runs the scheduler until the daemon stops.
pub(crate) fn start(ctl: Arc<Control>, emitter: Emitter) {
    tokio::spawn(async move { run(ctl, emitter).await });
}

async fn run(ctl: Arc<Control>, emitter: Emitter) {
    let mut plans: HashMap<String, Plan> = HashMap::new();
    let mut starting = true;
    while !ctl.is_shutting_down() {
        let catch_up = match replan(&ctl, &mut plans, starting) {
            Ok(catch_up) => catch_up,
            Err(e) => {
                tracing::error!("reading schedules: {e}");
                tokio::time::sleep(LONGEST_SLEEP).await;
                continue;
            }
        };
        starting = false;
        for (name, at) in catch_up {
            if let Some(plan) = plans.get(&name) {
                tracing::info!(schedule = %name, "a run missed while the daemon was down is made now");
                fire(&ctl, &emitter, &name, &plan.spec, at).await;
            }
        }
        ctl.scheduler.publish_plan(&plans);
        // Fire what is due, sleep until the next, until the schedules change.
        loop {
            let now = SystemTime::now();
            let mut fired = false;
            for (name, plan) in plans.iter_mut() {
                let Some(at) = plan.next.filter(|at| *at <= now) else {
                    continue;
                };
                fire(&ctl, &emitter, name, &plan.spec, at).await;
                plan.next = plan.schedule.next_after(at.max(now));
                fired = true;
            }
            if fired {
                ctl.scheduler.publish_plan(&plans);
            }
            let wait = plans
                .values()
                .filter_map(|p| p.next)
                .min()
                .map_or(LONGEST_SLEEP, |next| {
                    next.duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .min(LONGEST_SLEEP)
                });
            tokio::select! {
                () = ctl.scheduler.changed.notified() => break,
                () = tokio::time::sleep(wait) => {}
            }
            if ctl.is_shutting_down() {
                return;
            }
        }
    }
}

/// Brings `plans` in line with the stored schedules: unchanged ones keep their next
/// run, new or changed ones start from now; at start, the runs missed while down.
fn replan(
    ctl: &Control,
    plans: &mut HashMap<String, Plan>,
    starting: bool,
) -> Result<Vec<(String, SystemTime)>, crate::ControlError> {
    let records = ctl.db().schedules()?;
    let now = SystemTime::now();
    let mut catch_up = Vec::new();
    plans.retain(|name, _| records.iter().any(|r| &r.name == name));
    for r in records {
        if plans.get(&r.name).is_some_and(|p| p.spec == r.spec) {
            continue;
        }
        let schedule = match Schedule::parse(&r.spec.cron, &r.spec.timezone) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(schedule = %r.name, "not run: {e}");
                continue;
            }
        };
        let next = if starting {
            let start = schedule.on_start(r.last_run_ms.map(from_unix_ms), now);
            if let Some(at) = start.catch_up {
                catch_up.push((r.name.clone(), at));
            }
            start.next
        } else {
            schedule.next_after(now)
        };
        plans.insert(
            r.name,
            Plan {
                spec: r.spec,
                schedule,
                next,
            },
        );
    }
    Ok(catch_up)
}

/// Stores the run of `name` due at `at`, then notes it.
async fn fire(ctl: &Control, emitter: &Emitter, name: &str, spec: &ScheduleSpec, at: SystemTime) {
    let at_ms = unix_ms(at);
    let id = new_id();
    let data = spec
        .data_type()
        .zip(spec.data.as_ref())
        .map(|(ty, data)| (ty, data.clone().into_bytes()));
    let source = format!("/skiff/schedules/{name}");
    let event = match skiff_events::originate(&id, &source, PING_TYPE, at, data) {
        Ok(event) => event,
        Err(e) => {
            tracing::error!(schedule = %name, "its event could not be made: {e}");
            return;
        }
    };
    let origin = schedule_origin(name);
    let outbound = Outbound {
        key: format!("{origin}\n{at_ms}"),
        origin,
        service: &spec.to,
        path: &spec.path,
        format: spec.format,
        event,
        id,
        created_ms: crate::invocations::now_ms(),
    };
    let stored = match outbound.invocation() {
        Ok(invocation) => emitter.emit(vec![invocation]).await,
        Err(e) => Err(e.to_string()),
    };
    match stored {
        Ok(_) => {
            if let Err(e) = ctl.db().set_schedule_run(name, at_ms) {
                tracing::warn!(schedule = %name, "noting its run: {e}");
            }
        }
        Err(e) => tracing::error!(schedule = %name, "its run at {at_ms} ms was not stored: {e}"),
    }
}
