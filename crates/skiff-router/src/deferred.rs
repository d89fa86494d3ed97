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

/// Keeps async invocations; answers once one is stored for good.
pub trait AsyncSink: Send + Sync + 'static {
    fn enqueue(
        &self,
        request: AsyncRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Accepted, String>> + Send>>;
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
    let refuse = |status: u16, why: &'static str| (status, why);
    let checked = match (sink, body) {
        (None, _) => Err(refuse(501, "skiff: async invocations are not taken here")),
        (_, _) if info.upgrade => Err(refuse(400, "skiff: an upgrade cannot be async")),
        (_, BodyLen::Chunked | BodyLen::UntilClose) => Err(refuse(
            411,
            "skiff: an async invocation needs a Content-Length (its body is kept whole)",
        )),
        (_, BodyLen::Length(n)) if n > MAX_ASYNC_BODY => Err(refuse(
            413,
            "skiff: an async invocation's body may be at most 1 MiB",
        )),
        (Some(sink), BodyLen::Length(n)) => Ok((sink, n as usize)),
        (Some(sink), BodyLen::Empty) => Ok((sink, 0)),
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
    match proxy::read_small_body(c, len, info, deadline).await {
        BodyRead::Whole => {}
        BodyRead::Closed => return false,
        BodyRead::Stalled | BodyRead::TimedOut => {
            let why = "skiff: the request body stalled";
            return c.respond_local(408, why, None, false).await;
        }
    }
    let body = c.buf[c.start..c.start + len].to_vec();
    c.start += len;
    c.compact();
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
