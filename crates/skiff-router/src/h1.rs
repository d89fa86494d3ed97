//! HTTP/1.1 message heads as the proxy needs them: parsed in place (httparse) into spans
//! of the read buffer, classified once (framing, connection options, proxy headers), and
//! written back out for the next hop without the hop-by-hop fields.
//!
//! Framing follows RFC 9112 §6 strictly, because a proxy that frames a message differently
//! from the server behind it lets one request hide inside another (request smuggling): a
//! request with both Content-Length and Transfer-Encoding, conflicting lengths, or a
//! transfer coding other than a final `chunked` is refused.
//!
//! This module does no I/O and keeps no state between messages beyond reused capacity.

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Most header fields a message may have.
pub const MAX_HEADERS: usize = 128;
/// Largest message head (request line or status line plus fields).
pub const MAX_HEAD: usize = 64 * 1024;

/// Where a message's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLen {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Why a head could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x syntax.
    #[error("malformed message head: {0}")]
    Syntax(&'static str),
    /// Past [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields.
    #[error("message head too large")]
    TooLarge,
    /// Framing that cannot be trusted.
    #[error("{0}")]
    Framing(&'static str),
    /// A transfer coding the proxy does not forward.
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
}

/// The fields the proxy acts on; everything else is [`Field::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    /// Hop-by-hop fields always dropped: Keep-Alive, Proxy-Connection, TE.
    HopByHop,
    Upgrade,
    Expect,
    XForwardedFor,
    /// RFC 7239's Forwarded, which the proxy appends to.
    Forwarded,
    /// X-Forwarded-Proto and X-Forwarded-Host, which the proxy sets itself.
    XForwardedSet,
    XRequestId,
    Authorization,
    /// X-Skiff-Caller, which only the router sets: a client's is always dropped.
    SkiffCaller,
    /// RFC 7240's Prefer (`respond-async`).
    Prefer,
    /// The IETF draft's Idempotency-Key, which deduplicates async invocations.
    IdempotencyKey,
    Other,
}

fn classify(name: &[u8]) -> Field {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        4 if is("host") => Field::Host,
        2 if is("te") => Field::HopByHop,
        6 if is("expect") => Field::Expect,
        6 if is("prefer") => Field::Prefer,
        7 if is("upgrade") => Field::Upgrade,
        9 if is("forwarded") => Field::Forwarded,
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::HopByHop,
        12 if is("x-request-id") => Field::XRequestId,
        13 if is("authorization") => Field::Authorization,
        14 if is("x-skiff-caller") => Field::SkiffCaller,
        14 if is("content-length") => Field::ContentLength,
        15 if is("x-forwarded-for") => Field::XForwardedFor,
        15 if is("idempotency-key") => Field::IdempotencyKey,
        16 if is("proxy-connection") => Field::HopByHop,
        16 if is("x-forwarded-host") => Field::XForwardedSet,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("x-forwarded-proto") => Field::XForwardedSet,
        _ => Field::Other,
    }
}

#[derive(Clone, Debug)]
struct HeaderSpan {
    field: Field,
    name: Range<usize>,
    value: Range<usize>,
}

/// A parsed head: spans into the buffer it was parsed from, which must stay unchanged
/// while the head is used.
#[derive(Debug, Default)]
pub struct Head {
    headers: Vec<HeaderSpan>,
    /// Field names the Connection header lists (other than close/keep-alive/upgrade).
    connection_named: Vec<Range<usize>>,
    /// Bytes of the head, including the empty line.
    pub len: usize,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    method: Range<usize>,
    target: Range<usize>,
    /// The response status.
    pub status: u16,
    reason: Range<usize>,
    content_length: Option<u64>,
    chunked: bool,
    other_coding: bool,
    /// A Transfer-Encoding field was there at all (an empty one included).
    transfer_encoding: bool,
    conflicting_length: bool,
    host: Option<Range<usize>>,
    hosts: u8,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    has_upgrade: bool,
    expect_continue: bool,
    request_id: Option<Range<usize>>,
}

/// The reason phrase of the status line at the start of `buf` (`HTTP/1.x NNN reason`),
/// when it has one.
fn obs_text_reason(buf: &[u8]) -> Range<usize> {
    const START: usize = b"HTTP/1.1 200 ".len();
    let line_end = buf.iter().position(|b| *b == b'\n').unwrap_or(0);
    let end = if line_end > 0 && buf[line_end - 1] == b'\r' {
        line_end - 1
    } else {
        line_end
    };
    if end > START {
        START..end
    } else {
        0..0
    }
}

fn span(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Lengths past 2^63-1 overflow signed 64-bit parsers behind us (RFC 9112 §6.3 asks
    // recipients to anticipate it): one reading it as negative would frame differently.
    std::str::from_utf8(v)
        .ok()?
        .parse()
        .ok()
        .filter(|n| *n <= i64::MAX as u64)
}

impl Head {
    fn reset(&mut self) {
        let mut headers = std::mem::take(&mut self.headers);
        let mut named = std::mem::take(&mut self.connection_named);
        headers.clear();
        named.clear();
        *self = Head {
            headers,
            connection_named: named,
            ..Head::default()
        };
    }

    /// Parses a request head at the start of `buf`: `Ok(false)` when more bytes are needed.
    pub fn parse_request(&mut self, buf: &[u8]) -> Result<bool, HeadError> {
        self.reset();
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let Some(len) = head_length(req.parse_with_uninit_headers(buf, &mut fields), buf)? else {
            return Ok(false);
        };
        self.len = len;
        self.minor_version = req.version.unwrap_or(1);
        self.method = span(buf, req.method.unwrap_or("").as_bytes());
        self.target = span(buf, req.path.unwrap_or("").as_bytes());
        for h in req.headers.iter() {
            self.add_field(buf, h);
        }
        Ok(true)
    }

    /// Parses a response head at the start of `buf`: `Ok(false)` when more bytes are needed.
    pub fn parse_response(&mut self, buf: &[u8]) -> Result<bool, HeadError> {
        self.reset();
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut fields,
        );
        let Some(len) = head_length(parsed, buf)? else {
            return Ok(false);
        };
        self.len = len;
        self.minor_version = resp.version.unwrap_or(1);
        self.status = resp.code.unwrap_or(0);
        // Three digits are not enough: `040` or `999` mean nothing to a client, which
        // would read `HTTP/1.1 40` as malformed (RFC 9110 §15 defines 1xx to 5xx).
        if !(100..=599).contains(&self.status) {
            return Err(HeadError::Syntax("invalid status"));
        }
        self.reason = match resp.reason {
            Some(r) if !r.is_empty() => span(buf, r.as_bytes()),
            // httparse gives an empty reason for one with obs-text (bytes past 0x7f,
            // which RFC 9112 allows): it is read from the status line itself.
            _ => obs_text_reason(buf),
        };
        for h in resp.headers.iter() {
            self.add_field(buf, h);
        }
        Ok(true)
    }

    fn add_field(&mut self, buf: &[u8], h: &httparse::Header<'_>) {
        let field = classify(h.name.as_bytes());
        let value = trim(h.value);
        match field {
            Field::Host => {
                self.hosts = self.hosts.saturating_add(1);
                self.host = Some(span(buf, value));
            }
            Field::ContentLength => {
                // A list ("5, 5") is allowed when every element agrees.
                for v in value.split(|&b| b == b',').map(trim) {
                    match (parse_length(v), self.content_length) {
                        (None, _) => self.conflicting_length = true,
                        (Some(n), Some(prior)) if n != prior => self.conflicting_length = true,
                        (Some(n), _) => self.content_length = Some(n),
                    }
                }
            }
            Field::TransferEncoding => {
                self.transfer_encoding = true;
                for coding in value.split(|&b| b == b',').map(trim) {
                    if coding.is_empty() {
                        continue;
                    }
                    // Chunked must be last, and only once.
                    if self.chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                        self.other_coding = true;
                    }
                    self.chunked = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
            Field::Connection => {
                for token in value.split(|&b| b == b',').map(trim) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        self.upgrade_token = true;
                    } else if !token.is_empty() {
                        self.connection_named.push(span(buf, token));
                    }
                }
            }
            Field::Upgrade => self.has_upgrade = true,
            Field::Expect => {
                self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            }
            Field::XRequestId if !value.is_empty() && value.len() <= 128 => {
                self.request_id = Some(span(buf, value));
            }
            _ => {}
        }
        self.headers.push(HeaderSpan {
            field,
            name: span(buf, h.name.as_bytes()),
            value: span(buf, value),
        });
    }

    /// The request method.
    pub fn method<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.method.clone()]
    }

    /// Whether the request is HEAD (its response has no body).
    pub fn is_head(&self, buf: &[u8]) -> bool {
        self.method(buf) == b"HEAD"
    }

    /// Whether the method is idempotent (RFC 9110 §9.2.2): a request a proxy may send
    /// again on its own when a connection fails before the answer.
    pub fn is_idempotent(&self, buf: &[u8]) -> bool {
        matches!(
            self.method(buf),
            b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
        )
    }

    /// The host the request is for: the absolute-form target's authority, else Host.
    pub fn host<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        absolute_form(&buf[self.target.clone()])
            .map(|(authority, _)| authority)
            .or_else(|| self.host.clone().map(|r| &buf[r]))
    }

    /// The first Authorization field's value, if any.
    pub fn authorization<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.first(buf, Field::Authorization)
    }

    /// The first Idempotency-Key field's value, if any.
    pub fn idempotency_key<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.first(buf, Field::IdempotencyKey)
    }

    /// The first value of the field called `name` (any case), if any.
    pub fn field_named<'b>(&self, buf: &'b [u8], name: &[u8]) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| buf[h.name.clone()].eq_ignore_ascii_case(name))
            .map(|h| &buf[h.value.clone()])
    }

    fn first<'b>(&self, buf: &'b [u8], field: Field) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.field == field)
            .map(|h| &buf[h.value.clone()])
    }

    /// The request target in origin form (`/path?query`), as it is forwarded.
    pub fn origin_target<'b>(&self, buf: &'b [u8]) -> std::borrow::Cow<'b, [u8]> {
        let target = &buf[self.target.clone()];
        let path = absolute_form(target).map_or(target, |(_, path)| path);
        if path.starts_with(b"?") {
            let mut slash = b"/".to_vec();
            slash.extend_from_slice(path);
            return std::borrow::Cow::Owned(slash);
        }
        std::borrow::Cow::Borrowed(path)
    }

    /// Whether a Prefer field asks for `respond-async` (RFC 7240 §4.1): preferences
    /// are comma-separated, each a token maybe followed by `=value` or `;parameters`.
    pub fn prefers_async(&self, buf: &[u8]) -> bool {
        self.headers
            .iter()
            .filter(|h| h.field == Field::Prefer)
            .flat_map(|h| buf[h.value.clone()].split(|b| *b == b','))
            .any(|pref| {
                let name = pref
                    .split(|b| *b == b'=' || *b == b';')
                    .next()
                    .unwrap_or(&[]);
                name.trim_ascii().eq_ignore_ascii_case(b"respond-async")
            })
    }

    /// The request's end-to-end fields to keep for a later delivery, `name: value\r\n`
    /// each: not the framing (the body is kept whole), nor what the router sets or reads
    /// itself, nor an Authorization that held the token that let it in.
    pub fn write_kept_fields(&self, out: &mut Vec<u8>, buf: &[u8], drop_authorization: bool) {
        // The host it was sent to first: the delivery is routed by it.
        field(out, b"host", self.host(buf).unwrap_or_default());
        for (kind, name, value) in self.end_to_end(buf, false) {
            match kind {
                Field::Host
                | Field::SkiffCaller
                | Field::Prefer
                | Field::IdempotencyKey
                | Field::Expect
                | Field::XRequestId => {}
                Field::Authorization if drop_authorization => {}
                _ if name.contains(&b'_') => {}
                _ => field(out, name, value),
            }
        }
    }

    /// The request id the client sent, if usable.
    pub fn request_id<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.request_id.clone().map(|r| &buf[r])
    }

    /// Whether the client asks for a protocol upgrade (WebSocket).
    pub fn is_upgrade(&self) -> bool {
        self.has_upgrade && self.upgrade_token
    }

    /// Whether the client waits for `100 Continue` before sending its body. An HTTP/1.0
    /// client never gets one (RFC 9110 10.1.1: the expectation is ignored).
    pub fn expects_continue(&self) -> bool {
        self.expect_continue && self.minor_version >= 1
    }

    /// Whether the connection may carry another message after this one.
    pub fn keeps_alive(&self) -> bool {
        !self.close && (self.minor_version >= 1 || self.keep_alive)
    }

    /// The request's body framing, or why it cannot be trusted.
    pub fn request_body(&self, buf: &[u8]) -> Result<BodyLen, HeadError> {
        if self.hosts > 1 {
            return Err(HeadError::Framing("more than one Host header"));
        }
        // RFC 9112 3.2: HTTP/1.1 requests carry Host, absolute-form ones too.
        if self.minor_version == 1 && self.hosts == 0 {
            return Err(HeadError::Framing("HTTP/1.1 request without a Host header"));
        }
        if self.method(buf) == b"CONNECT" {
            return Err(HeadError::Framing("CONNECT is not supported"));
        }
        let target = &buf[self.target.clone()];
        if target == b"*" && self.method(buf) != b"OPTIONS" {
            return Err(HeadError::Framing("the * target is only for OPTIONS"));
        }
        if target != b"*" && !target.starts_with(b"/") && absolute_form(target).is_none() {
            return Err(HeadError::Framing(
                "a target that is neither a path nor absolute (authority-form is for CONNECT)",
            ));
        }
        if self.conflicting_length {
            return Err(HeadError::Framing("invalid or conflicting Content-Length"));
        }
        if self.transfer_encoding && !self.chunked && !self.other_coding {
            return Err(HeadError::Framing("an empty Transfer-Encoding"));
        }
        if self.chunked || self.other_coding || self.transfer_encoding {
            if self.content_length.is_some() {
                return Err(HeadError::Framing(
                    "both Content-Length and Transfer-Encoding",
                ));
            }
            if self.minor_version == 0 {
                return Err(HeadError::Framing(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            if self.other_coding {
                return Err(HeadError::UnsupportedCoding);
            }
            return Ok(BodyLen::Chunked);
        }
        Ok(self.content_length.map_or(BodyLen::Empty, BodyLen::Length))
    }

    /// Whether a transfer coding other than chunked applies (the body then runs until the
    /// connection closes, coded).
    pub fn has_other_coding(&self) -> bool {
        self.other_coding
    }

    /// The response's body framing (RFC 9112 §6.3), given whether the request was HEAD.
    pub fn response_body(&self, head_request: bool) -> Result<BodyLen, HeadError> {
        if head_request || self.status < 200 || self.status == 204 || self.status == 304 {
            return Ok(BodyLen::Empty);
        }
        if self.chunked && !self.other_coding {
            return Ok(BodyLen::Chunked);
        }
        if self.chunked || self.other_coding {
            return Ok(BodyLen::UntilClose);
        }
        if self.conflicting_length {
            return Err(HeadError::Framing("invalid or conflicting Content-Length"));
        }
        Ok(self
            .content_length
            .map_or(BodyLen::UntilClose, BodyLen::Length))
    }

    fn named_by_connection(&self, buf: &[u8], name: &[u8]) -> bool {
        self.connection_named
            .iter()
            .any(|r| buf[r.clone()].eq_ignore_ascii_case(name))
    }

    /// The end-to-end fields, in order, as `name: value` pairs. Content-Length is kept
    /// only when `keep_length` (a response not re-framed; requests get theirs rewritten).
    fn end_to_end<'a, 'b: 'a>(
        &'a self,
        buf: &'b [u8],
        keep_length: bool,
    ) -> impl Iterator<Item = (Field, &'b [u8], &'b [u8])> + 'a {
        self.headers.iter().filter_map(move |h| {
            let name = &buf[h.name.clone()];
            let hop = match h.field {
                Field::Connection | Field::HopByHop | Field::TransferEncoding | Field::Upgrade => {
                    true
                }
                Field::ContentLength => !keep_length,
                _ => false,
            };
            let named = h.field == Field::Other
                && !self.connection_named.is_empty()
                && self.named_by_connection(buf, name);
            (!hop && !named).then(|| (h.field, name, &buf[h.value.clone()]))
        })
    }
}

/// For an absolute-form target (`http://host/path`): the authority and the origin-form path.
fn absolute_form(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = if target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        &target[7..]
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    Some((authority, if path.is_empty() { b"/" } else { path }))
}

/// The length of a complete head from httparse's answer; `None` while more bytes may
/// complete it.
fn head_length(parsed: httparse::Result<usize>, buf: &[u8]) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => Ok(Some(n)),
        Ok(httparse::Status::Complete(_)) => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Syntax(syntax_reason(e))),
    }
}

fn syntax_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// What the proxy adds to a request it forwards.
pub struct Forwarding<'a> {
    /// The client's address, as text.
    pub client_ip: &'a str,
    /// The request id (the client's or a new one).
    pub request_id: &'a [u8],
    /// How the forwarded body is framed.
    pub body: BodyLen,
    /// Who calls a private service (`X-Skiff-Caller`), as the router knows it.
    pub caller: Option<&'a [u8]>,
    /// The Authorization field held the token that let the request in: it is not the
    /// app's to see (it could call as the client with it).
    pub drop_authorization: bool,
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A field the client may have sent on several lines, joined into one list (a line
/// allocates only from the second on).
#[derive(Default)]
struct Joined<'a> {
    first: Option<&'a [u8]>,
    rest: Vec<u8>,
}

impl<'a> Joined<'a> {
    fn push(&mut self, value: &'a [u8]) {
        if self.first.is_some() {
            self.rest.extend_from_slice(b", ");
            self.rest.extend_from_slice(value);
        } else {
            self.first = Some(value);
        }
    }

    /// Writes `name: ` and the client's list followed by `, `, if it sent one; the
    /// caller writes the proxy's own element after it.
    fn write_start(&self, out: &mut Vec<u8>, name: &[u8]) {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        if let Some(first) = self.first.filter(|v| !v.is_empty()) {
            out.extend_from_slice(first);
            out.extend_from_slice(&self.rest);
            out.extend_from_slice(b", ");
        }
    }
}

/// Writes the head of the request to send to the instance: origin-form target, HTTP/1.1,
/// end-to-end fields only, `Forwarded` (RFC 7239) and the X-Forwarded-* fields, the
/// request id, and the framing.
pub fn write_request_head(out: &mut Vec<u8>, buf: &[u8], head: &Head, fwd: &Forwarding<'_>) {
    let target = &buf[head.target.clone()];
    let absolute = absolute_form(target);
    let path = absolute.map_or(target, |(_, path)| path);
    out.extend_from_slice(head.method(buf));
    out.push(b' ');
    // `http://a?q=1` names the path `/` (RFC 9112 3.2.2).
    if path.starts_with(b"?") {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for = Joined::default();
    let mut forwarded = Joined::default();
    for (kind, name, value) in head.end_to_end(buf, false) {
        match kind {
            Field::XForwardedFor => forwarded_for.push(value),
            Field::Forwarded => forwarded.push(value),
            Field::XForwardedSet | Field::XRequestId | Field::SkiffCaller => {}
            Field::Authorization if fwd.drop_authorization => {}
            Field::Expect if head.expect_continue => {}
            // An absolute-form target names the host: the request is routed by it, and the
            // Host field sent on is made from it, not the client's (RFC 9112 3.2.2).
            Field::Host if absolute.is_some() => {}
            // CGI and WSGI apps read `X_Forwarded_For` and `X-Forwarded-For` as one
            // variable: a client could forge the proxy's own fields with underscores.
            _ if name.contains(&b'_') => {}
            _ => field(out, name, value),
        }
    }
    let host = head.host(buf);
    // HTTP/1.1 requires a Host: an HTTP/1.0 request without one goes on with an empty
    // one (RFC 9112 3.2), else strict servers answer 400.
    if head.hosts == 0 || absolute.is_some() {
        field(out, b"host", host.unwrap_or_default());
    }
    forwarded.write_start(out, b"forwarded");
    write_forwarded_element(out, fwd.client_ip, host);
    out.extend_from_slice(b"\r\n");
    forwarded_for.write_start(out, b"x-forwarded-for");
    out.extend_from_slice(fwd.client_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    if let Some(host) = host {
        field(out, b"x-forwarded-host", host);
    }
    field(out, b"x-request-id", fwd.request_id);
    if let Some(caller) = fwd.caller {
        field(out, b"x-skiff-caller", caller);
    }
    write_request_framing(out, fwd.body);
    if head.is_upgrade() {
        if let Some(h) = head.headers.iter().find(|h| h.field == Field::Upgrade) {
            field(out, b"upgrade", &buf[h.value.clone()]);
        }
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// This hop's element of a `Forwarded` list: `for=CLIENT;host=HOST;proto=http`, with an
/// IPv6 client as `"[ADDR]"` and a host that is not a token quoted (RFC 7239, 4 and 6).
fn write_forwarded_element(out: &mut Vec<u8>, client_ip: &str, host: Option<&[u8]>) {
    out.extend_from_slice(b"for=");
    if client_ip.contains(':') {
        out.extend_from_slice(b"\"[");
        out.extend_from_slice(client_ip.as_bytes());
        out.extend_from_slice(b"]\"");
    } else {
        out.extend_from_slice(client_ip.as_bytes());
    }
    if let Some(host) = host {
        out.extend_from_slice(b";host=");
        write_token_or_quoted(out, host);
    }
    out.extend_from_slice(b";proto=http");
}

/// `value` as an RFC 9110 token when it is one, else as a quoted-string.
fn write_token_or_quoted(out: &mut Vec<u8>, value: &[u8]) {
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if !value.is_empty() && value.iter().all(is_tchar) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn write_request_framing(out: &mut Vec<u8>, body: BodyLen) {
    match body {
        BodyLen::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        BodyLen::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyLen::Empty | BodyLen::UntilClose => {}
    }
}

/// How the proxy sends a response on to the client.
pub struct ResponseOut<'a> {
    /// The request id.
    pub request_id: &'a [u8],
    /// The framing the client gets.
    pub body: BodyLen,
    /// Whether the client connection stays open after this response.
    pub keep_alive: bool,
    /// Whether the client speaks HTTP/1.0.
    pub http10_client: bool,
}

/// Writes the head of the response to send to the client.
pub fn write_response_head(out: &mut Vec<u8>, buf: &[u8], head: &Head, resp: &ResponseOut<'_>) {
    let _ = write!(out, "HTTP/1.1 {} ", head.status);
    out.extend_from_slice(&buf[head.reason.clone()]);
    out.extend_from_slice(b"\r\n");
    let keep_length = !head.chunked && !head.other_coding;
    for (kind, name, value) in head.end_to_end(buf, keep_length) {
        if kind != Field::XRequestId {
            field(out, name, value);
        }
    }
    field(out, b"x-request-id", resp.request_id);
    if head.other_coding {
        // A body under another coding (gzip…) goes on byte for byte, delimited by the
        // close: the client needs the codings to read it.
        for h in head
            .headers
            .iter()
            .filter(|h| h.field == Field::TransferEncoding)
        {
            field(out, b"transfer-encoding", &buf[h.value.clone()]);
        }
    } else if resp.body == BodyLen::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if head.status == 101 {
        if let Some(h) = head.headers.iter().find(|h| h.field == Field::Upgrade) {
            field(out, b"upgrade", &buf[h.value.clone()]);
        }
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if !resp.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if resp.http10_client {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes an interim (1xx) response head to send on: its status line and end-to-end
/// fields.
pub fn write_interim_head(out: &mut Vec<u8>, buf: &[u8], head: &Head) {
    let _ = write!(out, "HTTP/1.1 {} ", head.status);
    out.extend_from_slice(&buf[head.reason.clone()]);
    out.extend_from_slice(b"\r\n");
    for (_, name, value) in head.end_to_end(buf, false) {
        field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// A response the proxy writes itself (errors): text body, Content-Length framing.
pub fn write_local_response(
    out: &mut Vec<u8>,
    status: u16,
    body: &str,
    request_id: &[u8],
    retry_after_secs: Option<u64>,
    keep_alive: bool,
) {
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        reason_phrase(status),
        body.len() + 1
    );
    if !request_id.is_empty() {
        field(out, b"x-request-id", request_id);
    }
    if let Some(secs) = retry_after_secs {
        let _ = write!(out, "retry-after: {secs}\r\n");
    }
    if status == 401 {
        // Required with every 401 (RFC 9110 §15.5.2): the scheme that would do.
        out.extend_from_slice(b"www-authenticate: Bearer realm=\"skiff\"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
}

/// A response of the router's own with a JSON body.
pub fn write_json(
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    request_id: &[u8],
    keep_alive: bool,
) {
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        reason_phrase(status),
        body.len()
    );
    if !request_id.is_empty() {
        field(out, b"x-request-id", request_id);
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// `202 Accepted` for an async invocation kept as `id`, with where to look it up.
pub fn write_accepted(
    out: &mut Vec<u8>,
    id: &str,
    location: &str,
    request_id: &[u8],
    keep_alive: bool,
) {
    let body = format!("accepted {id}\n");
    let _ = write!(
        out,
        "HTTP/1.1 202 Accepted\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nx-skiff-invocation-id: {id}\r\nlocation: {location}\r\n",
        body.len()
    );
    if !request_id.is_empty() {
        field(out, b"x-request-id", request_id);
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &str) -> (Vec<u8>, Head) {
        let buf = raw.as_bytes().to_vec();
        let mut head = Head::default();
        assert!(head.parse_request(&buf).unwrap(), "complete: {raw:?}");
        (buf, head)
    }

    fn forwarded(raw: &str) -> String {
        let (buf, head) = request(raw);
        let body = head.request_body(&buf).unwrap();
        let mut out = Vec::new();
        let fwd = Forwarding {
            client_ip: "10.1.2.3",
            request_id: b"rid",
            body,
            caller: None,
            drop_authorization: false,
        };
        write_request_head(&mut out, &buf, &head, &fwd);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_caller_is_the_routers_to_say_and_a_used_token_stays_behind() {
        let raw = "GET / HTTP/1.1\r\nHost: db\r\nX-Skiff-Caller: service/forged\r\n\
                   Authorization: Bearer skiff_x\r\n\r\n";
        let (buf, head) = request(raw);
        assert_eq!(head.authorization(&buf), Some(&b"Bearer skiff_x"[..]));
        let write = |caller: Option<&'static [u8]>, drop_authorization| {
            let mut out = Vec::new();
            let fwd = Forwarding {
                client_ip: "10.1.2.3",
                request_id: b"rid",
                body: BodyLen::Empty,
                caller,
                drop_authorization,
            };
            write_request_head(&mut out, &buf, &head, &fwd);
            String::from_utf8(out).unwrap()
        };
        let public = write(None, false);
        assert!(!public.contains("forged"), "{public}");
        assert!(public.contains("Authorization: Bearer skiff_x\r\n"));
        let private = write(Some(b"token/ci"), true);
        assert!(!private.contains("forged") && !private.contains("skiff_x"));
        assert!(
            private.contains("x-skiff-caller: token/ci\r\n"),
            "{private}"
        );
    }

    #[test]
    fn a_401_names_its_scheme() {
        let mut out = Vec::new();
        write_local_response(&mut out, 401, "no", b"", None, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(text.contains("www-authenticate: Bearer realm=\"skiff\"\r\n"));
    }

    #[test]
    fn partial_heads_ask_for_more() {
        let mut head = Head::default();
        assert!(!head
            .parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .unwrap());
        assert_eq!(
            head.parse_request(&vec![b'a'; MAX_HEAD + 1]),
            Err(HeadError::TooLarge)
        );
        assert!(matches!(
            head.parse_request(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            Err(HeadError::Syntax(_))
        ));
        let mut huge = b"GET / HTTP/1.1\r\nx: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert_eq!(head.parse_request(&huge), Err(HeadError::TooLarge));
    }

    #[test]
    fn hop_by_hop_fields_go_and_proxy_fields_are_set() {
        let out = forwarded(
            "GET http://hello.localhost:8080/p?q=1 HTTP/1.1\r\nHost: evil\r\nConnection: keep-alive, x-secret\r\n\
             X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-App: kept\r\n\
             X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Host: evil\r\nX-Request-Id: client\r\n\r\n",
        );
        assert_eq!(
            out,
            "GET /p?q=1 HTTP/1.1\r\nX-App: kept\r\nhost: hello.localhost:8080\r\n\
             forwarded: for=10.1.2.3;host=\"hello.localhost:8080\";proto=http\r\n\
             x-forwarded-for: 192.0.2.1, 10.1.2.3\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: hello.localhost:8080\r\nx-request-id: rid\r\n\r\n"
        );
    }

    #[test]
    fn targets_are_checked_and_an_absolute_one_is_forwarded_as_rfc_9112_says() {
        let out = forwarded("GET http://a.localhost?q=1 HTTP/1.1\r\nHost: evil\r\n\r\n");
        assert!(
            out.starts_with("GET /?q=1 HTTP/1.1\r\nhost: a.localhost\r\n"),
            "{out}"
        );
        assert!(!out.contains("evil"), "{out}");
        let refused = |raw: &str| {
            let (buf, head) = request(raw);
            match head.request_body(&buf) {
                Err(HeadError::Framing(why)) => why,
                other => panic!("{raw:?} accepted: {other:?}"),
            }
        };
        assert!(refused("GET http://a.localhost/ HTTP/1.1\r\n\r\n").contains("without a Host"));
        assert!(refused("GET * HTTP/1.1\r\nHost: a\r\n\r\n").contains("only for OPTIONS"));
        assert!(
            refused("GET a.localhost:80 HTTP/1.1\r\nHost: a\r\n\r\n").contains("authority-form")
        );
        let (buf, head) = request("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(head.request_body(&buf).is_ok());
    }

    #[test]
    fn an_empty_transfer_encoding_is_no_way_around_the_te_cl_refusal() {
        for te in ["", ",", " , "] {
            let raw = format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\nContent-Length: 3\r\n\r\nabc"
            );
            let (buf, head) = request(&raw);
            assert!(
                head.request_body(&buf).is_err(),
                "TE {te:?} with CL accepted"
            );
        }
        let (buf, head) = request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n");
        assert!(
            head.request_body(&buf).is_err(),
            "an empty TE alone accepted"
        );
    }

    #[test]
    fn field_names_with_underscores_are_not_forwarded() {
        let out = forwarded(
            "GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nX-Real_IP: 6.6.6.6\r\nX-Ok: 1\r\n\r\n",
        );
        assert!(!out.contains("6.6.6.6"), "{out}");
        assert!(out.contains("X-Ok: 1\r\n"), "{out}");
    }

    #[test]
    fn an_http_1_0_client_gets_no_100_continue() {
        let (_, old) =
            request("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!old.expects_continue());
        let (_, new) = request(
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(new.expects_continue());
    }

    #[test]
    fn repeated_forwarded_for_fields_are_joined() {
        let out = forwarded(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: a\r\nX-Forwarded-For: b\r\n\r\n",
        );
        assert!(out.contains("x-forwarded-for: a, b, 10.1.2.3\r\n"), "{out}");
    }

    #[test]
    fn forwarded_is_appended_to_the_clients_with_ipv6_and_hosts_quoted() {
        let (buf, head) = request(
            "GET / HTTP/1.1\r\nHost: h.localhost\r\nForwarded: for=192.0.2.60;proto=https\r\n\
             Forwarded: for=unknown\r\n\r\n",
        );
        let mut out = Vec::new();
        let fwd = Forwarding {
            client_ip: "2001:db8::1",
            request_id: b"rid",
            body: head.request_body(&buf).unwrap(),
            caller: None,
            drop_authorization: false,
        };
        write_request_head(&mut out, &buf, &head, &fwd);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(
                "\r\nforwarded: for=192.0.2.60;proto=https, for=unknown, \
                 for=\"[2001:db8::1]\";host=h.localhost;proto=http\r\n"
            ),
            "{out}"
        );
        assert_eq!(out.matches("orwarded:").count(), 1, "one line: {out}");
        let mut quoted = Vec::new();
        write_token_or_quoted(&mut quoted, b"a\"b\\c:1");
        assert_eq!(quoted, b"\"a\\\"b\\\\c:1\"");
    }

    #[test]
    fn upgrades_keep_their_pair() {
        let (buf, head) = request(
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(head.is_upgrade());
        let out = forwarded(std::str::from_utf8(&buf).unwrap());
        assert!(
            out.ends_with("upgrade: websocket\r\nconnection: upgrade\r\n\r\n"),
            "{out}"
        );
    }

    #[test]
    fn request_framing_is_strict() {
        let framing = |raw: &str| {
            let (buf, head) = request(raw);
            head.request_body(&buf)
        };
        assert_eq!(
            framing("GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Ok(BodyLen::Empty)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"),
            Ok(BodyLen::Length(5))
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n"),
            Ok(BodyLen::Length(i64::MAX as u64))
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n"),
            Ok(BodyLen::Length(5))
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(BodyLen::Chunked)
        );
        for bad in [
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(framing(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(
            framing("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(HeadError::UnsupportedCoding)
        );
    }

    #[test]
    fn response_framing_follows_the_status_and_method() {
        let framing = |raw: &str, head_request: bool| {
            let mut head = Head::default();
            assert!(head.parse_response(raw.as_bytes()).unwrap());
            head.response_body(head_request)
        };
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(framing(ok, false), Ok(BodyLen::Length(3)));
        assert_eq!(framing(ok, true), Ok(BodyLen::Empty));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            Ok(BodyLen::Length(0))
        );
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\n\r\n", false),
            Ok(BodyLen::Empty)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n", false),
            Ok(BodyLen::UntilClose)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Ok(BodyLen::Chunked)
        );
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
    }

    #[test]
    fn response_heads_lose_hop_by_hop_fields_and_get_the_request_id() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
                    Transfer-Encoding: chunked\r\nX-Request-Id: app\r\nX-App: 1\r\n\r\n";
        let mut head = Head::default();
        assert!(head.parse_response(raw).unwrap());
        let mut out = Vec::new();
        let resp = ResponseOut {
            request_id: b"rid",
            body: BodyLen::Chunked,
            keep_alive: false,
            http10_client: false,
        };
        write_response_head(&mut out, raw, &head, &resp);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nX-App: 1\r\nx-request-id: rid\r\ntransfer-encoding: chunked\r\n\
             connection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_reason_phrase_with_obs_text_is_sent_on_as_it_came() {
        let raw = b"HTTP/1.1 200 Gr\xfc\xdfe\r\nContent-Length: 0\r\n\r\n";
        let mut head = Head::default();
        assert!(head.parse_response(raw).unwrap());
        let mut out = Vec::new();
        let resp = ResponseOut {
            request_id: b"rid",
            body: BodyLen::Length(0),
            keep_alive: true,
            http10_client: false,
        };
        write_response_head(&mut out, raw, &head, &resp);
        assert!(out.starts_with(b"HTTP/1.1 200 Gr\xfc\xdfe\r\n"), "{out:?}");
    }

    #[test]
    fn an_http10_request_without_host_goes_on_with_an_empty_one() {
        let (buf, head) = request("GET / HTTP/1.0\r\n\r\n");
        let mut out = Vec::new();
        let fwd = Forwarding {
            client_ip: "10.0.0.1",
            request_id: b"r",
            body: BodyLen::Empty,
            caller: None,
            drop_authorization: false,
        };
        write_request_head(&mut out, &buf, &head, &fwd);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nhost: \r\n"), "{text}");
    }

    #[test]
    fn a_body_under_another_coding_keeps_its_transfer_encoding() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        let mut head = Head::default();
        assert!(head.parse_response(raw).unwrap());
        assert_eq!(head.response_body(false), Ok(BodyLen::UntilClose));
        let mut out = Vec::new();
        let resp = ResponseOut {
            request_id: b"rid",
            body: BodyLen::UntilClose,
            keep_alive: false,
            http10_client: false,
        };
        write_response_head(&mut out, raw, &head, &resp);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("transfer-encoding: gzip, chunked\r\n"),
            "{text}"
        );
    }

    #[test]
    fn statuses_outside_1xx_to_5xx_are_refused() {
        for (raw, ok) in [
            (&b"HTTP/1.1 040 Odd\r\n\r\n"[..], false),
            (b"HTTP/1.1 600 Odd\r\n\r\n", false),
            (b"HTTP/1.1 099 Odd\r\n\r\n", false),
            (b"HTTP/1.1 599 Odd\r\n\r\n", true),
            (b"HTTP/1.1 100 Continue\r\n\r\n", true),
        ] {
            let mut head = Head::default();
            assert_eq!(head.parse_response(raw).is_ok(), ok, "{raw:?}");
        }
    }
}
