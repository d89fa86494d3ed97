//! Async invocations on the ingress (`Prefer: respond-async`, RFC 7240): the request is
//! read whole, handed to the [`AsyncSink`] (which keeps it durably), and answered
//! `202 Accepted` with its id, instead of being forwarded. The sink delivers it later,
//! back through the router. It must not deliver or store anything itself.

use crate::conn::{ClientConn, RequestInfo};
use crate::h1::{self, BodyLen};
use crate::proxy::{self, BodyRead};
use std::future::Future;
use std::pin::Pin;
use tokio::io::AsyncWriteExt;
use tokio::time::Sleep;

/// The largest body an async invocation may have.
pub const MAX_ASYNC_BODY: u64 = 1 << 20;

/// A request to keep for later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncRequest {
    /// The service the route belongs to.
    pub service: String,
    pub method: String,
    /// Origin-form path and query.
    pub target: String,
    /// `name: value\r\n` each, the Host first.
    pub fields: Vec<u8>,
    pub body: Vec<u8>,
    pub idempotency_key: Option<String>,
    /// Who called a private service, to tell the app at delivery.
    pub caller: Option<String>,
}

/// How a kept request is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    /// An earlier request with the same idempotency key was kept under this id.
    pub duplicate: bool,
}

/// An event published on the ingress (`NAME.topics.skiff.internal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    pub topic: String,
    /// `name: value\r\n` each (the CloudEvents binding reads `ce-*` and the type).
    pub fields: Vec<u8>,
    pub body: Vec<u8>,
    /// `service/NAME` or `token/NAME`.
    pub publisher: String,
}

/// Why a publish was refused: the status and what to tell the client.
pub type Refusal = (u16, String);

/// Keeps async invocations and published events; answers once they are stored for good.
pub trait AsyncSink: Send + Sync + 'static {
    fn enqueue(
        &self,
        request: AsyncRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Accepted, String>> + Send>>;

    /// Publishes an event; the JSON to answer 202 with.
    fn publish(
        &self,
        _request: PublishRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, Refusal>> + Send>> {
        Box::pin(async { Err((501, "skiff: topics take no events here".to_owned())) })
    }
}

/// An idempotency key: 1 to 255 visible ASCII characters.
fn idempotency_key(value: &[u8]) -> Result<String, &'static str> {
    let value = value.trim_ascii();
    let ok = !value.is_empty() && value.len() <= 255 && value.iter().all(|b| b.is_ascii_graphic());
    match ok {
        true => Ok(String::from_utf8_lossy(value).into_owned()),
        false => Err("skiff: Idempotency-Key must be 1 to 255 visible ASCII characters"),
    }
}

/// Keeps the request whose head is in `c.head` for later and answers 202; returns
/// whether the connection goes on.
pub(crate) async fn accept(
    c: &mut ClientConn,
    sink: Option<&dyn AsyncSink>,
    service: &str,
    info: RequestInfo,
    body: BodyLen,
    admitted: proxy::Admitted,
    deadline: Pin<&mut Sleep>,
) -> bool {
    let keep_on_error = info.keep_alive && matches!(body, BodyLen::Empty | BodyLen::Length(0));
    let checked = match sink {
        None => Err((501, "skiff: async invocations are not taken here")),
        Some(sink) => whole_body(&info, body).map(|len| (sink, len)),
    };
    let (sink, len) = match checked {
        Ok(v) => v,
        Err((status, why)) => {
            c.start += info.head_len;
            return c.respond_local(status, why, None, keep_on_error).await;
        }
    };
    let req = &c.buf[c.start..];
    let key = match c.head.idempotency_key(req).map(idempotency_key).transpose() {
        Ok(key) => key,
        Err(why) => {
            c.start += info.head_len;
            return c.respond_local(400, why, None, keep_on_error).await;
        }
    };
    let mut fields = Vec::new();
    c.head
        .write_kept_fields(&mut fields, req, admitted.drop_authorization);
    let method = String::from_utf8_lossy(c.head.method(req)).into_owned();
    let target = String::from_utf8_lossy(&c.head.origin_target(req)).into_owned();
    c.start += info.head_len;
    let body = match read_whole(c, len, info, deadline).await {
        Ok(body) => body,
        Err(goes_on) => return goes_on,
    };
    let request = AsyncRequest {
        service: service.to_owned(),
        method,
        target,
        fields,
        body,
        idempotency_key: key,
        caller: admitted.caller,
    };
    match sink.enqueue(request).await {
        Ok(accepted) => {
            c.resp_out.clear();
            let location = format!("/v1/services/{service}/invocations/{}", accepted.id);
            h1::write_accepted(
                &mut c.resp_out,
                &accepted.id,
                &location,
                &c.request_id,
                info.keep_alive,
            );
            c.stream.write_all(&c.resp_out).await.is_ok() && info.keep_alive
        }
        Err(e) => {
            let why = format!("skiff: the request could not be kept: {e}");
            c.respond_local(503, &why, Some(1), info.keep_alive).await
        }
    }
}

/// The checks on a body kept whole: its length known and at most [`MAX_ASYNC_BODY`].
fn whole_body(info: &RequestInfo, body: BodyLen) -> Result<usize, (u16, &'static str)> {
    match body {
        _ if info.upgrade => Err((400, "skiff: an upgrade cannot be kept for later")),
        BodyLen::Chunked | BodyLen::UntilClose => {
            Err((411, "skiff: send a Content-Length (the body is kept whole)"))
        }
        BodyLen::Length(n) if n > MAX_ASYNC_BODY => {
            Err((413, "skiff: a kept body may be at most 1 MiB"))
        }
        BodyLen::Length(n) => Ok(n as usize),
        BodyLen::Empty => Ok(0),
    }
}

/// Reads the body of `len` bytes after the head; `Err(goes_on)` when it could not.
async fn read_whole(
    c: &mut ClientConn,
    len: usize,
    info: RequestInfo,
    deadline: Pin<&mut Sleep>,
) -> Result<Vec<u8>, bool> {
    match proxy::read_small_body(c, len, info, deadline).await {
        BodyRead::Whole => {}
        BodyRead::Closed => return Err(false),
        BodyRead::Stalled | BodyRead::TimedOut => {
            let why = "skiff: the request body stalled";
            return Err(c.respond_local(408, why, None, false).await);
        }
    }
    let body = c.buf[c.start..c.start + len].to_vec();
    c.start += len;
    c.compact();
    Ok(body)
}

/// Publishes the event whose head is in `c.head` to `topic` and answers 202 with what
/// it made; returns whether the connection goes on.
pub(crate) async fn publish(
    c: &mut ClientConn,
    sink: Option<&dyn AsyncSink>,
    topic: String,
    publisher: String,
    info: RequestInfo,
    body: BodyLen,
    deadline: Pin<&mut Sleep>,
) -> bool {
    let keep_on_error = info.keep_alive && matches!(body, BodyLen::Empty | BodyLen::Length(0));
    let checked = match (sink, c.head.method(&c.buf[c.start..])) {
        (None, _) => Err((501, "skiff: topics take no events here")),
        (_, m) if m != b"POST" => Err((405, "skiff: publish an event with POST")),
        (Some(sink), _) => whole_body(&info, body).map(|len| (sink, len)),
    };
    let (sink, len) = match checked {
        Ok(v) => v,
        Err((status, why)) => {
            c.start += info.head_len;
            return c.respond_local(status, why, None, keep_on_error).await;
        }
    };
    let mut fields = Vec::new();
    c.head
        .write_kept_fields(&mut fields, &c.buf[c.start..], true);
    c.start += info.head_len;
    let body = match read_whole(c, len, info, deadline).await {
        Ok(body) => body,
        Err(goes_on) => return goes_on,
    };
    let request = PublishRequest {
        topic,
        fields,
        body,
        publisher,
    };
    match sink.publish(request).await {
        Ok(json) => {
            c.resp_out.clear();
            h1::write_json(&mut c.resp_out, 202, &json, &c.request_id, info.keep_alive);
            c.stream.write_all(&c.resp_out).await.is_ok() && info.keep_alive
        }
        Err((status, why)) => c.respond_local(status, &why, None, info.keep_alive).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_short_visible_text() {
        assert_eq!(idempotency_key(b" order-17 "), Ok("order-17".into()));
        assert!(idempotency_key(b"").is_err());
        assert!(idempotency_key(b"a b").is_err());
        assert!(idempotency_key(&[b'k'; 256]).is_err());
        assert!(idempotency_key(&[0xff]).is_err());
    }
}
