//! Fuzz targets for the parsers every request crosses: request heads, response heads and
//! the chunked body scanner. Each target holds properties, not just "no panic":
//!
//! - a head is complete at exactly one length, whatever follows it;
//! - the head skiff forwards parses, by skiff, as the same message with the same framing
//!   (what the instance reads is what the router routed);
//! - the chunked scanner gives the same verdict, length and data however its input is
//!   split, and what it accepts re-chunks to the same data.
//!
//! `cargo test` runs each target on its corpus (`fuzz/corpus/<target>/`, in the repo)
//! and then on random mutations of it (bolero's generator picks a seed and edits) for
//! `SKIFF_FUZZ_SECONDS` (default 5) seconds. `cargo bolero test -p skiff-router
//! fuzz::tests::<target>` runs the same target coverage-guided (libFuzzer, nightly).

use crate::body::ChunkedScanner;
use crate::h1::{self, BodyLen, Forwarding, Head, ResponseOut};
use crate::proxy::reframe;
use bolero::generator::TypeGenerator;
use std::time::Duration;

/// One change to a seed.
#[derive(Clone, Copy, Debug, TypeGenerator)]
enum Edit {
    Insert(u16, u8),
    Delete(u16),
    Replace(u16, u8),
    /// Inserts one of [`TOKENS`].
    Token(u16, u8),
    /// Repeats a stretch (long fields, many lines).
    Repeat(u16, u8, u8),
}

/// Pieces of HTTP/1.1 that random bytes seldom spell.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\x00",
    b"\x7f",
    b"0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: \r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 9223372036854775808\r\n",
    b"Host: a.localhost\r\n",
    b"Connection: close, upgrade\r\n",
    b"Connection: x-secret\r\n",
    b"Upgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"X-Request-Id: abc\r\n",
    b"Forwarded: for=1.2.3.4\r\n",
    b"X_Forwarded_For: 1.2.3.4\r\n",
    b"HTTP/1.0",
    b"HTTP/1.1",
    b"http://a.localhost",
    b"ffffffffffffffff",
    b"7fffffffffffffff",
    b"HTTP/1.1 100 Continue\r\n\r\n",
];

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for edit in edits {
        let at = |pos: u16, len: usize| pos as usize % (len + 1);
        match *edit {
            Edit::Insert(pos, b) => {
                let i = at(pos, out.len());
                out.insert(i, b);
            }
            Edit::Delete(pos) if !out.is_empty() => {
                let i = pos as usize % out.len();
                out.remove(i);
            }
            Edit::Replace(pos, b) if !out.is_empty() => {
                let i = pos as usize % out.len();
                out[i] = b;
            }
            Edit::Token(pos, which) => {
                let i = at(pos, out.len());
                let token = TOKENS[which as usize % TOKENS.len()];
                out.splice(i..i, token.iter().copied());
            }
            Edit::Repeat(pos, len, times) if !out.is_empty() => {
                let i = pos as usize % out.len();
                let end = (i + len as usize).min(out.len());
                let piece = out[i..end].to_vec();
                for _ in 0..times % 64 {
                    out.splice(end..end, piece.iter().copied());
                }
            }
            _ => {}
        }
        if out.len() > 128 * 1024 {
            out.truncate(128 * 1024);
        }
    }
    out
}

/// A request head: complete at one length; forwarded, the same request.
pub(crate) fn request(buf: &[u8]) {
    let mut head = Head::default();
    if head.parse_request(buf) != Ok(true) {
        return;
    }
    assert!(head.len <= buf.len() && head.len > 0);
    complete_at_one_length(buf, head.len, |h, b| h.parse_request(b));
    let Ok(body) = head.request_body(buf) else {
        return;
    };
    let mut out = Vec::new();
    let fwd = Forwarding {
        client_ip: "10.0.0.1",
        request_id: b"fuzz-1",
        body,
        caller: None,
        drop_authorization: false,
    };
    h1::write_request_head(&mut out, buf, &head, &fwd);
    let shown = shown(&out);
    let mut again = Head::default();
    let parsed = again.parse_request(&out);
    // The proxy's own fields may take a head near a limit (bytes or fields) past it.
    if parsed == Err(h1::HeadError::TooLarge) && past_the_limits(&out) {
        return;
    }
    assert_eq!(parsed, Ok(true), "forwarded: {shown:?}");
    assert_eq!(again.len, out.len(), "forwarded: {shown:?}");
    assert_eq!(again.method(&out), head.method(buf), "forwarded: {shown:?}");
    assert_eq!(
        again.host(&out).unwrap_or_default(),
        head.host(buf).unwrap_or_default(),
        "forwarded: {shown:?}"
    );
    assert_eq!(again.request_body(&out), Ok(body), "forwarded: {shown:?}");
}

/// Whether a head the proxy wrote (a request or a response) is over [`h1::MAX_HEAD`] bytes or
/// [`h1::MAX_HEADERS`] fields (it writes every line ended by CRLF).
fn past_the_limits(head: &[u8]) -> bool {
    let lines = head.windows(2).filter(|w| w == b"\r\n").count();
    // Not fields: the start line and the empty line ending the head.
    head.len() > h1::MAX_HEAD || lines.saturating_sub(2) > h1::MAX_HEADERS
}

/// A response head: complete at one length; sent on to an HTTP/1.1 and to an HTTP/1.0
/// client, the same status and the framing the proxy chose for each.
pub(crate) fn response(buf: &[u8]) {
    let mut head = Head::default();
    if head.parse_response(buf) != Ok(true) {
        return;
    }
    assert!(head.len <= buf.len() && head.len > 0);
    complete_at_one_length(buf, head.len, |h, b| h.parse_response(b));
    if (102..200).contains(&head.status) {
        let mut out = Vec::new();
        h1::write_interim_head(&mut out, buf, &head);
        let mut again = Head::default();
        let shown = String::from_utf8_lossy(&out).into_owned();
        assert_eq!(again.parse_response(&out), Ok(true), "interim: {shown:?}");
        assert_eq!(
            (again.status, again.len),
            (head.status, out.len()),
            "{shown:?}"
        );
    }
    let Ok(body) = head.response_body(false) else {
        return;
    };
    for http10 in [false, true] {
        let (client_framing, _) = reframe(body, http10, head.has_other_coding());
        let mut out = Vec::new();
        let resp = ResponseOut {
            request_id: b"fuzz-1",
            body: client_framing,
            keep_alive: client_framing != BodyLen::UntilClose,
            http10_client: http10,
        };
        h1::write_response_head(&mut out, buf, &head, &resp);
        let shown = shown(&out);
        let mut again = Head::default();
        let parsed = again.parse_response(&out);
        if parsed == Err(h1::HeadError::TooLarge) && past_the_limits(&out) {
            continue;
        }
        assert_eq!(parsed, Ok(true), "sent on: {shown:?}");
        assert_eq!(again.status, head.status, "sent on: {shown:?}");
        if head.status != 101 {
            let read = again.response_body(false);
            assert_eq!(read, Ok(client_framing), "sent on: {shown:?}");
        }
    }
}

/// A head for a failure message: its first 600 bytes.
fn shown(out: &[u8]) -> String {
    String::from_utf8_lossy(&out[..out.len().min(600)]).into_owned()
}

/// The head in `buf` ends at `len`: one byte less is not a head, and what follows it
/// does not change where it ends.
fn complete_at_one_length(
    buf: &[u8],
    len: usize,
    parse: impl Fn(&mut Head, &[u8]) -> Result<bool, h1::HeadError>,
) {
    let mut cut = Head::default();
    assert_ne!(parse(&mut cut, &buf[..len - 1]), Ok(true));
    let mut longer = buf[..len].to_vec();
    longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let mut again = Head::default();
    assert_eq!(parse(&mut again, &longer), Ok(true));
    assert_eq!(again.len, len);
}

/// Scans `input` fed in pieces cut at `cuts`: (accepted?, bytes used, data, done?).
fn scan(input: &[u8], cuts: &[u16]) -> (bool, usize, Vec<u8>, bool) {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| *c as usize % (input.len() + 1))
        .collect();
    points.push(input.len());
    points.sort_unstable();
    let mut scanner = ChunkedScanner::default();
    let (mut used, mut data, mut from) = (0, Vec::new(), 0);
    for to in points {
        if scanner.is_done() || to < from {
            break;
        }
        let piece = &input[from..to];
        match scanner.feed(piece, |r| data.extend_from_slice(&piece[r])) {
            Ok(n) => used += n,
            Err(_) => return (false, used, data, false),
        }
        from = to;
    }
    (true, used, data, scanner.is_done())
}

/// The chunked scanner: the same however the input is split; what it accepts whole,
/// re-chunked, gives the same data.
pub(crate) fn chunked(input: &[u8], cuts: &[u16]) {
    let whole = scan(input, &[]);
    let split = scan(input, cuts);
    assert_eq!(whole.0, split.0, "verdict differs with cuts {cuts:?}");
    if !whole.0 {
        return;
    }
    assert_eq!(whole, split, "cuts {cuts:?}");
    let (_, used, data, done) = whole;
    assert!(used <= input.len());
    assert!(data.len() <= used);
    if done {
        let mut rechunked = format!("{:x}\r\n", data.len()).into_bytes();
        rechunked.extend_from_slice(&data);
        rechunked.extend_from_slice(b"\r\n0\r\n\r\n");
        if data.is_empty() {
            rechunked = b"0\r\n\r\n".to_vec();
        }
        let again = scan(&rechunked, &[]);
        assert_eq!(again, (true, rechunked.len(), data, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    fn budget() -> Duration {
        let secs = std::env::var("SKIFF_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5);
        Duration::from_secs(secs)
    }

    /// Runs `check` on every seed of `target`, then on mutations of them.
    fn run(target: &str, check: impl Fn(&[u8], &[u16]) + std::panic::RefUnwindSafe) {
        let seeds = corpus(target);
        for seed in &seeds {
            check(seed, &[]);
        }
        bolero::check!()
            .with_type::<(u16, Vec<Edit>, Vec<u16>)>()
            .with_test_time(budget())
            .for_each(|(pick, edits, cuts)| {
                let seed = &seeds[*pick as usize % seeds.len()];
                check(&apply(seed, edits), cuts);
            });
    }

    #[test]
    fn request_heads() {
        run("request", |input, _| request(input));
    }

    #[test]
    fn response_heads() {
        run("response", |input, _| response(input));
    }

    #[test]
    fn chunked_bodies() {
        run("chunked", chunked);
    }
}
