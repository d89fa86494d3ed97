//! Forwarding one request to an instance: takes a slot from the revision's pool, rewrites
//! the proxy headers, sends the request on a kept-alive connection, and streams the
//! response back while holding the slot until its body ends. Upgrades (WebSocket) become
//! a byte pipe between client and instance. Failures become the status a client expects:
//! 429 (queue full), 502 (instance unreachable), 503 (revision failing), 504 (timeout).

use crate::pool::{Lease, PoolError, RevisionPool};
use crate::upstream;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A response body: the instance's, streamed (holding its slot), or one skiff wrote.
pub enum ProxyBody {
    /// Streaming from an instance.
    Upstream {
        /// The instance's body.
        inner: Incoming,
        /// The slot, freed when the body ends.
        lease: Option<Lease>,
    },
    /// Written by skiff.
    Local(Full<Bytes>),
}

impl ProxyBody {
    /// A plain-text body.
    pub fn text(s: impl Into<String>) -> ProxyBody {
        ProxyBody::Local(Full::new(Bytes::from(s.into())))
    }

    /// No body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Local(Full::new(Bytes::new()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { inner, lease } => {
                if let Some(conn) = lease.as_mut().and_then(|l| l.connection_mut()) {
                    conn.poll_io(cx);
                }
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    // The last frame: the slot and connection are free now, before the
                    // client has even read it.
                    Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => drop(lease.take()),
                    Poll::Ready(None) => drop(lease.take()),
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(mut l) = lease.take() {
                            l.discard_connection();
                        }
                    }
                    _ => {}
                }
                polled
            }
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body dropped before its end left the connection mid-response: not reusable.
        if let ProxyBody::Upstream {
            inner,
            lease: Some(lease),
        } = self
        {
            // hyper drops a body it knows has ended without polling it to the end.
            if !inner.is_end_stream() {
                lease.discard_connection();
            }
        }
    }
}

/// Why a request was not forwarded.
#[derive(Debug)]
pub enum ForwardError {
    /// From the pool.
    Pool(PoolError),
    /// The instance could not be reached or broke the connection.
    Upstream {
        /// Instance id.
        instance: String,
        /// What failed.
        error: String,
    },
}

/// A response skiff writes itself.
pub fn local(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(text + "\n"));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

impl ForwardError {
    /// The response a client gets.
    pub fn into_response(self) -> Response<ProxyBody> {
        match self {
            ForwardError::Pool(e @ PoolError::Overloaded(_)) => {
                let mut r = local(StatusCode::TOO_MANY_REQUESTS, format!("skiff: {e}"));
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ForwardError::Pool(ref e @ PoolError::Unavailable { retry_after, .. }) => {
                let mut r = local(StatusCode::SERVICE_UNAVAILABLE, format!("skiff: {e}"));
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                r
            }
            ForwardError::Pool(e @ PoolError::Closed(_)) => {
                local(StatusCode::SERVICE_UNAVAILABLE, format!("skiff: {e}"))
            }
            ForwardError::Upstream { instance, error } => local(
                StatusCode::BAD_GATEWAY,
                format!("skiff: instance {instance} failed the request: {error}"),
            ),
        }
    }
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and those the Connection header names; keeps the upgrade
/// pair when the request is an upgrade.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if upgrade {
        if let Some(v) = upgrade_value {
            headers.insert(header::UPGRADE, v);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Sets X-Forwarded-For/-Proto/-Host and X-Request-Id on a request about to go upstream.
fn set_proxy_headers(headers: &mut HeaderMap, remote: SocketAddr, host: &str, request_id: &str) {
    let ip = remote.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
}

/// Forwards `req` to an instance of `pool`'s revision.
pub async fn forward(
    pool: &Arc<RevisionPool>,
    mut req: Request<Incoming>,
    remote: SocketAddr,
    host: &str,
    request_id: &str,
) -> Result<Response<ProxyBody>, ForwardError> {
    let mut lease = pool.acquire().await.map_err(ForwardError::Pool)?;
    let upgrade = is_upgrade(req.headers());
    strip_hop_by_hop(req.headers_mut(), upgrade);
    set_proxy_headers(req.headers_mut(), remote, host, request_id);
    if req.uri().authority().is_some() {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap_or_default();
        *req.uri_mut() = path;
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let upstream = Arc::clone(lease.upstream());
    let fail = |error: String| ForwardError::Upstream {
        instance: upstream.id.clone(),
        error,
    };
    let mut conn = upstream
        .connection()
        .await
        .map_err(|e| fail(format!("connecting: {e}")))?;
    let mut resp = match conn.send(req).await {
        Ok(resp) => resp,
        Err(mut e) => match e.take_message() {
            // A kept-alive connection the instance had closed: the request never left,
            // so it goes again on a new one.
            Some(req) => {
                conn = upstream::open(&upstream.target)
                    .await
                    .map_err(|e| fail(format!("connecting: {e}")))?;
                conn.send(req)
                    .await
                    .map_err(|e| fail(e.into_error().to_string()))?
            }
            None => return Err(fail(e.into_error().to_string())),
        },
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            conn.detach();
            tokio::spawn(async move {
                let _lease = lease;
                if let (Ok(client), Ok(instance)) = (client_upgrade.await, upstream_upgrade.await) {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(client),
                        &mut TokioIo::new(instance),
                    )
                    .await;
                }
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, ProxyBody::empty()));
        }
    }
    strip_hop_by_hop(resp.headers_mut(), false);
    lease.keep_connection(conn);
    let (parts, inner) = resp.into_parts();
    Ok(Response::from_parts(
        parts,
        ProxyBody::Upstream {
            inner,
            lease: Some(lease),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_keep_theirs() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-app"));

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let mut h = HeaderMap::new();
        let remote: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        set_proxy_headers(&mut h, remote, "hello.localhost:8080", "abc");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        set_proxy_headers(&mut h, remote, "hello.localhost:8080", "abc");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "192.0.2.1, 10.1.2.3");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "hello.localhost:8080");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-request-id").unwrap(), "abc");
    }
}
