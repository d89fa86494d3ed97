//! The CLI's side of the control-plane API: HTTP/1.1 over the daemon's unix socket. API
//! errors come back as [`ApiFailure`], carrying the daemon's message (and the failing
//! instance's log tail, when there is one).

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use skiff_control::documents::{ErrorBody, ErrorDetail};
use std::path::{Path, PathBuf};

/// An error answer from the daemon.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub detail: ErrorDetail,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.detail.message)?;
        if let Some(tail) = self.detail.log_tail.as_deref().filter(|t| !t.is_empty()) {
            write!(f, "\nlast log lines:\n{}", tail.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

/// A connection-less client: each call opens the socket anew.
pub struct Client {
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(socket: &Path) -> anyhow::Result<Client> {
        Ok(Client {
            socket: socket.to_owned(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the client runtime")?,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        if_match: Option<u64>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the skiff daemon at {} (is `skiff server` running? \
                     set --socket or SKIFF_SOCKET to use another)",
                    self.socket.display()
                )
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to the daemon")?;
        tokio::spawn(conn);
        let bytes = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "skiff")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(version) = if_match {
            req = req.header(hyper::header::IF_MATCH, format!("\"{version}\""));
        }
        let req = req.body(Full::new(bytes))?;
        let resp = sender
            .send_request(req)
            .await
            .context("talking to the daemon")?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| ErrorDetail {
                kind: "internal".into(),
                message: format!(
                    "the daemon answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ),
                field: None,
                log_tail: None,
            });
        Err(ApiFailure { status, detail }.into())
    }

    /// Sends a request and parses the JSON answer.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        self.call_at(method, path, body, None)
    }

    /// Sends a write that holds only while the service is at `version` (`If-Match`); the
    /// daemon refuses it with 409 when the service changed or went since it was read.
    pub fn call_at<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        version: Option<u64>,
    ) -> anyhow::Result<T> {
        self.runtime.block_on(async {
            let resp = self.send(method, path, body, version).await?;
            let bytes = resp.into_body().collect().await?.to_bytes();
            serde_json::from_slice(&bytes).context("reading the daemon's answer")
        })
    }

    /// Sends a GET and hands each line of the (streamed) answer to `each`.
    pub fn lines(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.runtime.block_on(async {
            let mut body = self.send(Method::GET, path, None, None).await?.into_body();
            let mut pending = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.context("reading the daemon's answer")?;
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                pending.extend_from_slice(data);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    each(String::from_utf8_lossy(&line[..nl]).as_ref())?;
                }
            }
            Ok(())
        })
    }
}

/// Whether an error is the daemon saying "no such thing".
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiFailure>()
        .is_some_and(|f| f.status == StatusCode::NOT_FOUND)
}
