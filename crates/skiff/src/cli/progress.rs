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
