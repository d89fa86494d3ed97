//! Draws image progress on a terminal: one line, redrawn in place, on stderr. Nothing is
//! drawn when stderr is not a terminal (scripts and logs get only the final result), but
//! warnings (entries left out of a layer) are printed either way, each on its own line.

use skiff_image::{Progress, ProgressFn};
use std::io::{IsTerminal, Write};
use std::sync::Arc;

const WIDTH: usize = 24;

/// A bar like `[=========>      ] 3/8`.
pub fn bar(done: usize, total: usize) -> String {
    let total = total.max(1);
    let filled = (done.min(total) * WIDTH) / total;
    let mut s = String::with_capacity(WIDTH + 2);
    s.push('[');
    for i in 0..WIDTH {
        s.push(if i < filled {
            '='
        } else if i == filled {
            '>'
        } else {
            ' '
        });
    }
    s.push(']');
    s
}

/// A callback drawing progress on stderr when it is a terminal, and printing warnings
/// always.
pub fn callback() -> ProgressFn {
    let tty = std::io::stderr().is_terminal();
    Arc::new(move |event: Progress<'_>| {
        let line = match event {
            Progress::Skipped {
                digest,
                entry,
                kind,
            } => {
                let clear = if tty { "\r\x1b[2K" } else { "" };
                eprintln!(
                    "{clear}warning: layer {}: skipped {entry}, a {kind} device node \
                     (instances get their /dev from the sandbox)",
                    digest.short()
                );
                return;
            }
            _ if !tty => return,
            Progress::BlobStored { digest, bytes } => {
                format!(
                    "stored {} ({})",
                    digest.short(),
                    super::output::human_size(bytes)
                )
            }
            Progress::Layer {
                index,
                total,
                digest,
                cached,
            } => format!(
                "{} layer {index}/{total} {} {}",
                bar(index - 1, total),
                digest.short(),
                if cached {
                    "already unpacked"
                } else {
                    "unpacking"
                }
            ),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    })
}

/// Clears the progress line, if stderr is a terminal (call before printing results).
pub fn finish() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
}

/// How a pull shows itself: bars per layer on a terminal (bytes, rate), redrawn in
/// place; a line per layer when it is done otherwise; JSON events (one per line, on
/// stderr, so stdout stays the result) for scripts.
pub fn pull_callback(json: bool) -> skiff_registry::PullProgress {
    use skiff_registry::PullEvent;
    let tty = std::io::stderr().is_terminal() && !json;
    let layers = std::sync::Mutex::new(Vec::<(String, u64, u64, Option<f64>)>::new());
    let started = std::time::Instant::now();
    Arc::new(move |event: PullEvent<'_>| {
        if json {
            let line = match event {
                PullEvent::Downloading {
                    digest,
                    done,
                    total,
                } => serde_json::json!(
                    {"event": "downloading", "digest": digest, "done": done, "total": total}
                ),
                PullEvent::Downloaded {
                    digest,
                    bytes,
                    seconds,
                } => serde_json::json!(
                    {"event": "downloaded", "digest": digest, "bytes": bytes, "seconds": seconds}
                ),
                PullEvent::Cached { digest } => {
                    serde_json::json!({"event": "cached", "digest": digest})
                }
            };
            eprintln!("{line}");
            return;
        }
        if !tty {
            match event {
                PullEvent::Downloaded {
                    digest,
                    bytes,
                    seconds,
                } => eprintln!(
                    "pulled {} ({} in {seconds:.2} s)",
                    short(digest),
                    super::output::human_size(bytes)
                ),
                PullEvent::Cached { digest } => eprintln!("have {}", short(digest)),
                PullEvent::Downloading { .. } => {}
            }
            return;
        }
        let mut layers = layers.lock().unwrap_or_else(|p| p.into_inner());
        let (digest, done, total, seconds) = match event {
            PullEvent::Downloading {
                digest,
                done,
                total,
            } => (digest, done, total, None),
            PullEvent::Downloaded {
                digest,
                bytes,
                seconds,
            } => (digest, bytes, bytes, Some(seconds)),
            PullEvent::Cached { digest } => (digest, 0, 0, Some(0.0)),
        };
        let drawn = layers.len();
        match layers.iter_mut().find(|l| l.0 == digest) {
            Some(l) => *l = (digest.to_owned(), done, total, seconds),
            None => layers.push((digest.to_owned(), done, total, seconds)),
        }
        let mut err = std::io::stderr().lock();
        if drawn > 0 {
            let _ = write!(err, "\x1b[{drawn}A");
        }
        let elapsed = started.elapsed().as_secs_f64().max(0.001);
        for (digest, done, total, seconds) in layers.iter() {
            let state = match seconds {
                Some(_) if *total == 0 => "already stored".to_owned(),
                Some(s) => format!("done in {s:.2} s"),
                None => format!(
                    "{}/s",
                    super::output::human_size((*done as f64 / elapsed) as u64)
                ),
            };
            let _ = writeln!(
                err,
                "\r\x1b[2K{} {} {} / {} {state}",
                short(digest),
                bar(
                    (*done).min(u64::from(u32::MAX)) as usize,
                    (*total).max(1).min(u64::from(u32::MAX)) as usize
                ),
                super::output::human_size(*done),
                super::output::human_size(*total),
            );
        }
        let _ = err.flush();
    })
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(super::bar(0, 4), format!("[>{}]", " ".repeat(23)));
        assert_eq!(
            super::bar(2, 4),
            format!("[{}>{}]", "=".repeat(12), " ".repeat(11))
        );
        assert_eq!(super::bar(4, 4), format!("[{}]", "=".repeat(24)));
    }
}
