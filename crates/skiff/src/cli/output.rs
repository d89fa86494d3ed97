//! Output for people (aligned tables) and for scripts (`--output json`).

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Prints rows as a left-aligned table with a header.
pub fn table<R: AsRef<[S]>, S: AsRef<str>>(header: &[&str], rows: &[R]) {
    write_out(&render_table(header, rows));
}

/// The table as text: columns padded to their widest cell and three spaces apart, no
/// trailing blanks.
fn render_table<R: AsRef<[S]>, S: AsRef<str>>(header: &[&str], rows: &[R]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.as_ref().chars().count());
        }
    }
    // One write for the whole table: ten thousand lines written one by one were ten
    // thousand system calls (stdout is line-buffered).
    let line_len: usize = widths.iter().map(|w| w + 3).sum::<usize>() + 1;
    let mut text = String::with_capacity(line_len * (rows.len() + 1));
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let start = text.len();
        for (cell, w) in cells.zip(&widths) {
            text.push_str(cell);
            let pad = w.saturating_sub(cell.chars().count()) + 3;
            text.extend(std::iter::repeat_n(' ', pad));
        }
        let kept = text[start..].trim_end().len();
        text.truncate(start + kept);
        text.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.as_ref().iter().map(AsRef::as_ref));
    }
    text
}

/// Writes `text` to stdout, or ends the command saying why it could not (a closed pipe
/// ends it by SIGPIPE first: see `main`).
fn write_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("skiff: writing the output: {e}");
        std::process::exit(super::EXIT_FAILURE);
    }
}

/// Human-readable size: `12.3 MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints a JSON value, pretty.
pub fn json(value: &serde_json::Value) {
    let mut text = serde_json::to_string_pretty(value).expect("json values serialize");
    text.push('\n');
    write_out(&text);
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_table_pads_columns_to_their_widest_cell_without_trailing_blanks() {
        let rows = vec![
            vec!["hello-10".to_owned(), "ünï".to_owned(), "1".to_owned()],
            vec!["a".to_owned(), "b".to_owned(), String::new()],
        ];
        let text = super::render_table(&["NAME", "REV", "READY"], &rows);
        assert_eq!(
            text,
            "NAME       REV   READY\nhello-10   ünï   1\na          b\n"
        );
    }
}
