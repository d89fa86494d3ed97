//! Running one health probe against a serving instance, period after period, and
//! reporting when it flips between passing and failing. Owns the probe loop and the
//! threshold counting; what a flip means (out of rotation, restart) is the caller's.

use crate::runtime::ExecProbe;
use skiff_core::Probe;
use skiff_router::{upstream, Target};
use std::ops::ControlFlow;
use std::time::Duration;

/// Probes every period after the initial delay. The instance starts as passing; after
/// `failure_threshold` failures in a row it is failing, after one success passing again
/// (Kubernetes' success threshold). Each flip calls `on_flip(passing)`; when that answers
/// `Break`, returns the last failure. The guard `awake()` returns is held through each
/// probe, so that a throttled instance runs to answer it.
pub async fn watch<G>(
    probe: &Probe,
    target: &Target,
    exec: Option<&ExecProbe>,
    awake: impl Fn() -> G,
    mut on_flip: impl FnMut(bool) -> ControlFlow<()>,
) -> String {
    tokio::time::sleep(Duration::from_millis(probe.initial_delay_ms)).await;
    let mut period = tokio::time::interval(Duration::from_millis(probe.period_ms));
    period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passing = true;
    let mut failures = 0;
    loop {
        period.tick().await;
        let result = {
            let _awake = awake();
            once(probe, target, exec).await
        };
        match result {
            Ok(()) => {
                failures = 0;
                if !passing {
                    passing = true;
                    let _ = on_flip(true);
                }
            }
            Err(why) => {
                failures += 1;
                if passing && failures >= probe.failure_threshold {
                    passing = false;
                    if on_flip(false).is_break() {
                        return why;
                    }
                }
            }
        }
    }
}

/// One probe; `Err` says why it failed.
async fn once(probe: &Probe, target: &Target, exec: Option<&ExecProbe>) -> Result<(), String> {
    let timeout = Duration::from_millis(probe.timeout_ms);
    if probe.is_exec() {
        let Some(run) = exec.cloned() else {
            return Err("this runtime cannot run commands in its instances".into());
        };
        let argv = probe.exec.clone();
        return tokio::task::spawn_blocking(move || run(&argv, timeout))
            .await
            .unwrap_or_else(|e| Err(format!("the probe's thread failed: {e}")));
    }
    let result = match &probe.http_path {
        Some(path) => tokio::time::timeout(timeout, upstream::http_probe(target, path))
            .await
            .map(|r| r.map(Some)),
        None => tokio::time::timeout(timeout, upstream::connect(target))
            .await
            .map(|r| r.map(|_| None)),
    };
    match result {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(Some(code))) if !(200..400).contains(&code) => Err(format!("status {code}")),
        Ok(Ok(_)) => Ok(()),
    }
}
