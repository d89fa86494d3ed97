//! Finding where a message body ends while its bytes pass through unchanged.
//!
//! The proxy forwards bodies byte for byte — chunked ones too — so it only needs to know
//! where each body ends (and, to de-chunk for an HTTP/1.0 client, which bytes are data).
//! The grammar of RFC 9112 §7.1 is checked strictly, so that the instance behind cannot
//! read a different message boundary than the proxy did: CRLF line ends; hex sizes up to
//! 2^63-1 (leading zeros aside) with nothing but `;` extensions after optional
//! whitespace (`3 4` is refused, not read as 3); no control characters in extensions;
//! trailer fields as `token ":" value`, without obsolete line folding, and none of the
//! fields that frame or route a message (Content-Length, Transfer-Encoding, Host…),
//! which a recipient merging trailers into the head would obey.
//!
//! This module does no I/O.

use crate::h1::BodyLen;
use std::ops::Range;

/// What is left of one body in transit.
#[derive(Clone, Debug)]
pub enum BodyTracker {
    /// This many bytes still to come.
    Length(u64),
    /// A chunked body, at some point of its grammar.
    Chunked(ChunkedScanner),
    /// Everything until the sender closes.
    UntilClose,
    /// The body has ended.
    Done,
}

impl BodyTracker {
    /// Tracks a body framed as `len`.
    pub fn new(len: BodyLen) -> BodyTracker {
        match len {
            BodyLen::Empty | BodyLen::Length(0) => BodyTracker::Done,
            BodyLen::Length(n) => BodyTracker::Length(n),
            BodyLen::Chunked => BodyTracker::Chunked(ChunkedScanner::default()),
            BodyLen::UntilClose => BodyTracker::UntilClose,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        matches!(self, BodyTracker::Done)
    }

    /// How many of `input`'s bytes belong to the body (all, unless it ends inside);
    /// `data` gets the ranges that are content rather than chunk framing.
    pub fn take(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<usize, ChunkError> {
        let used = match self {
            BodyTracker::Done => 0,
            BodyTracker::UntilClose => input.len(),
            BodyTracker::Length(left) => {
                let used = (*left).min(input.len() as u64);
                *left -= used;
                used as usize
            }
            BodyTracker::Chunked(scanner) => scanner.feed(input, &mut data)?,
        };
        if !matches!(self, BodyTracker::Chunked(_)) && used > 0 {
            data(0..used);
        }
        let ended = match self {
            BodyTracker::Length(0) => true,
            BodyTracker::Chunked(scanner) => scanner.is_done(),
            _ => false,
        };
        if ended {
            *self = BodyTracker::Done;
        }
        Ok(used)
    }

    /// The sender closed: a body delimited by the close has ended; any other is cut.
    pub fn end_of_stream(&mut self) -> bool {
        match self {
            BodyTracker::UntilClose | BodyTracker::Done => {
                *self = BodyTracker::Done;
                true
            }
            _ => false,
        }
    }
}

/// Longest chunk-size line (size plus extensions) and trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

/// Why a chunked body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(&'static str);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `bool` = at least one seen.
    Size(bool),
    /// Whitespace after the size: only `;` (an extension) or the line's end may follow.
    SizeWhitespace,
    /// An extension after the size.
    Extension,
    /// LF after the size line's CR.
    SizeLf,
    /// Chunk data still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// Start of a trailer line, or the final empty line.
    TrailerStart,
    /// A trailer field's name, up to its colon.
    TrailerName,
    /// A trailer field's value, up to its CR.
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Tracks one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedScanner {
    state: State,
    size: u64,
    line: usize,
    trailers: usize,
    /// The trailer field name being read, lowercased (as far as it fits).
    name: [u8; NAME_KEPT],
    name_len: usize,
}

/// Trailer field names are kept this far, which is enough to tell the refused ones.
const NAME_KEPT: usize = 24;

/// Fields a trailer must not carry (RFC 9110 §6.5.1): they frame, route or control the
/// message, and a recipient that merges trailers into the head would obey them.
const REFUSED_TRAILERS: [&[u8]; 9] = [
    b"content-length",
    b"transfer-encoding",
    b"host",
    b"trailer",
    b"connection",
    b"keep-alive",
    b"upgrade",
    b"te",
    b"expect",
];

/// `tchar` of RFC 9110 §5.6.2: what a field name is made of.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: State::Size(false),
            size: 0,
            line: 0,
            trailers: 0,
            name: [0; NAME_KEPT],
            name_len: 0,
        }
    }
}

fn is_field_char(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

impl ChunkedScanner {
    /// Whether the whole body, trailers included, has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `input` (the next bytes of the body); returns how many belong to the body:
    /// all of them unless the body ends inside `input`. Calls `data` with the ranges of
    /// `input` that are chunk data.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(left) = self.state {
                let take = left.min((input.len() - i) as u64) as usize;
                data(i..i + take);
                i += take;
                self.state = if left == take as u64 {
                    State::DataCr
                } else {
                    State::Data(left - take as u64)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = self.step(b)?;
            if self.state == State::Done {
                break;
            }
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Size(seen) => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                    // Leading zeros do not count; past 2^63-1 a signed parser behind
                    // would see a negative size.
                    if self.size > (i64::MAX as u64) >> 4 {
                        return Err(ChunkError("chunk size too large"));
                    }
                    self.size = self.size << 4 | digit;
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(ChunkError("chunk size line too long"));
                    }
                    State::Size(true)
                }
                _ if !seen => return Err(ChunkError("chunk size missing")),
                b'\r' => State::SizeLf,
                b';' => {
                    self.line += 1;
                    State::Extension
                }
                b' ' | b'\t' => {
                    self.line += 1;
                    State::SizeWhitespace
                }
                _ => return Err(ChunkError("invalid chunk size")),
            },
            State::SizeWhitespace => {
                self.line += 1;
                if self.line > MAX_LINE {
                    return Err(ChunkError("chunk size line too long"));
                }
                match b {
                    b' ' | b'\t' => State::SizeWhitespace,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(ChunkError("invalid chunk size")),
                }
            }
            State::Extension => match b {
                b'\r' => State::SizeLf,
                _ if is_field_char(b) => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    State::Extension
                }
                _ => return Err(ChunkError("invalid byte in chunk extension")),
            },
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError("chunk size line not ended by CRLF"));
                }
                let size = std::mem::take(&mut self.size);
                self.line = 0;
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data(size)
                }
            }
            State::Data(_) => unreachable!("handled in feed"),
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size(false),
            State::DataCr | State::DataLf => {
                return Err(ChunkError("chunk data not followed by CRLF"))
            }
            State::TrailerStart if b == b'\r' => State::EndLf,
            State::TrailerStart | State::TrailerName | State::TrailerValue => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(ChunkError("trailers too large"));
                }
                self.trailer_step(b)?
            }
            State::TrailerLf if b == b'\n' => State::TrailerStart,
            State::EndLf if b == b'\n' => State::Done,
            State::TrailerLf | State::EndLf => {
                return Err(ChunkError("trailer line not ended by CRLF"))
            }
            State::Done => State::Done,
        })
    }

    /// One byte of a trailer field line (`name ":" value`, up to its CR).
    fn trailer_step(&mut self, b: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::TrailerStart | State::TrailerName if is_token_char(b) => {
                if self.state == State::TrailerStart {
                    self.name_len = 0;
                }
                if self.name_len < NAME_KEPT {
                    self.name[self.name_len] = b.to_ascii_lowercase();
                }
                self.name_len += 1;
                State::TrailerName
            }
            State::TrailerName if b == b':' => {
                let name = &self.name[..self.name_len.min(NAME_KEPT)];
                if self.name_len <= NAME_KEPT && REFUSED_TRAILERS.contains(&name) {
                    return Err(ChunkError("a trailer field that frames or routes"));
                }
                State::TrailerValue
            }
            State::TrailerStart if b == b' ' || b == b'\t' => {
                return Err(ChunkError("obsolete line folding in trailers"))
            }
            State::TrailerStart | State::TrailerName => {
                return Err(ChunkError("invalid trailer field name"))
            }
            State::TrailerValue if b == b'\r' => State::TrailerLf,
            State::TrailerValue if is_field_char(b) => State::TrailerValue,
            _ => return Err(ChunkError("invalid byte in trailer")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(body: &[u8], piece: usize) -> Result<(usize, Vec<u8>), ChunkError> {
        let mut s = ChunkedScanner::default();
        let mut data = Vec::new();
        let mut used = 0;
        for part in body.chunks(piece) {
            let n = s.feed(part, |r| data.extend_from_slice(&part[r]))?;
            used += n;
            if s.is_done() {
                break;
            }
        }
        Ok((used, data))
    }

    #[test]
    fn finds_the_end_in_any_split_and_leaves_what_follows() {
        let body =
            b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        for piece in [1, 2, 3, 7, body.len()] {
            let (used, data) = scan_in_pieces(body, piece).unwrap();
            assert_eq!(used, end, "piece {piece}");
            assert_eq!(data, b"hello0123456789abcdef");
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let mut s = ChunkedScanner::default();
        assert_eq!(s.feed(b"5\r\nhel", |_| {}).unwrap(), 6);
        assert!(!s.is_done());
        assert_eq!(s.feed(b"lo\r\n0\r\n\r\nX", |_| {}).unwrap(), 9);
        assert!(s.is_done());
    }

    #[test]
    fn lengths_stop_at_their_end() {
        let mut t = BodyTracker::new(BodyLen::Length(5));
        assert_eq!(t.take(b"hel", |_| {}).unwrap(), 3);
        assert!(!t.is_done());
        let mut data = Vec::new();
        assert_eq!(
            t.take(b"loGET", |r| data.push((r.start, r.end))).unwrap(),
            2
        );
        assert_eq!(data, vec![(0, 2)]);
        assert!(t.is_done());
        assert!(BodyTracker::new(BodyLen::Length(0)).is_done());
        let mut cut = BodyTracker::new(BodyLen::Length(5));
        assert!(!cut.end_of_stream());
        let mut until_close = BodyTracker::new(BodyLen::UntilClose);
        assert_eq!(until_close.take(b"abc", |_| {}).unwrap(), 3);
        assert!(until_close.end_of_stream());
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5;a\x00b\r\nhello\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n\n",
        ] {
            assert!(scan_in_pieces(bad, 3).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn whitespace_in_a_size_is_refused_before_an_extension_allowed() {
        assert!(scan_in_pieces(b"3 4\r\nabcd\r\n0\r\n\r\n", 2).is_err());
        assert!(scan_in_pieces(b"3\t4\r\n", 1).is_err());
        let (_, data) = scan_in_pieces(b"3 ;x=1\r\nabc\r\n0 \r\n\r\n", 2).unwrap();
        assert_eq!(data, b"abc");
    }

    #[test]
    fn sizes_stop_at_two_to_the_63_leading_zeros_aside() {
        let mut s = ChunkedScanner::default();
        s.feed(b"7fffffffffffffff\r\n", |_| {}).unwrap();
        assert_eq!(s.state, State::Data(i64::MAX as u64));
        assert!(scan_in_pieces(b"8000000000000000\r\n", 4).is_err());
        assert!(scan_in_pieces(b"ffffffffffffffff\r\n", 4).is_err());
        let zeros = b"00000000000000000000003\r\nabc\r\n0\r\n\r\n";
        assert_eq!(scan_in_pieces(zeros, 5).unwrap().1, b"abc");
    }

    #[test]
    fn trailers_are_fields_and_none_frames_or_routes() {
        let good = b"0\r\nX-Checksum: abc\r\ngrpc-status: 0\r\n\r\n";
        assert!(scan_in_pieces(good, 3).is_ok());
        for bad in [
            &b"0\r\nContent-Length: 5\r\n\r\n"[..],
            b"0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"0\r\nHOST: evil\r\n\r\n",
            b"0\r\nX-A: 1\r\n folded\r\n\r\n",
            b"0\r\nX-A : 1\r\n\r\n",
            b"0\r\n: 1\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\nX-A: 1\x7f\r\n\r\n",
        ] {
            assert!(scan_in_pieces(bad, 2).is_err(), "accepted {bad:?}");
        }
        // A long name that only starts like a refused one is fine.
        assert!(
            scan_in_pieces(b"0\r\ncontent-length-of-the-upload-in-bytes: 5\r\n\r\n", 7).is_ok()
        );
    }
}
