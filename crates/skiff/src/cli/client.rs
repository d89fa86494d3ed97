//! The CLI's side of the control-plane API: HTTP/1.1 over the daemon's unix socket, or
//! over TLS to its TCP API with a bearer token (`--api`, `--token`, `--ca-file`). API
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

/// The daemon's TCP API: where, as whom, trusting what.
pub struct Remote {
    /// `host:port`.
    pub authority: String,
    pub server_name: tokio_rustls::rustls::pki_types::ServerName<'static>,
    pub token: String,
    pub tls: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
}

impl Remote {
    /// The API at `url` (`https://HOST:PORT`), with `token`, trusting the certificates
    /// in `ca_file` (the daemon's `api.crt`).
    pub fn new(url: &str, token: &str, ca_file: &Path) -> anyhow::Result<Remote> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("--api {url:?} is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            anyhow::bail!("--api {url}: the API is served over TLS: give https://HOST:PORT");
        }
        let host = uri.host().context("--api: the URL names no host")?;
        let port = uri
            .port_u16()
            .context("--api: give the port, as https://HOST:PORT")?;
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = rustls::pki_types::ServerName::try_from(bare)
            .with_context(|| format!("--api: {host} is not a host name or address"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file)
            .with_context(|| format!("reading {}", ca_file.display()))?
        {
            let cert = cert.with_context(|| format!("reading {}", ca_file.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("a certificate of {} is not usable", ca_file.display()))?;
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Remote {
            authority: format!("{host}:{port}"),
            server_name,
            token: token.to_owned(),
            tls: std::sync::Arc::new(tls),
        })
    }
}

/// A connection-less client: each call connects anew.
pub struct Client {
    socket: PathBuf,
    remote: Option<Remote>,
    runtime: tokio::runtime::Runtime,
}

/// Either end of a connection to the daemon.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Stream for T {}

impl Client {
    pub fn new(socket: &Path, remote: Option<Remote>) -> anyhow::Result<Client> {
        Ok(Client {
            socket: socket.to_owned(),
            remote,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the client runtime")?,
        })
    }

    async fn connect(&self) -> anyhow::Result<Box<dyn Stream>> {
        let Some(remote) = &self.remote else {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .with_context(|| {
                    format!(
                        "cannot reach the skiff daemon at {} (is `skiff server` running? \
                         set --socket or SKIFF_SOCKET to use another)",
                        self.socket.display()
                    )
                })?;
            return Ok(Box::new(stream));
        };
        let tcp = tokio::net::TcpStream::connect(&remote.authority)
            .await
            .with_context(|| format!("cannot reach the skiff API at {}", remote.authority))?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(&remote.tls))
            .connect(remote.server_name.clone(), tcp)
            .await
            .with_context(|| {
                format!(
                    "TLS with the skiff API at {} (is --ca-file the daemon's api.crt?)",
                    remote.authority
                )
            })?;
        Ok(Box::new(tls))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        if_match: Option<u64>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let bytes = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let json = [("content-type".to_owned(), b"application/json".to_vec())];
        self.send_raw(method, path, &json, bytes, if_match).await
    }

    /// Sends a request with `fields` (a content type among them) and `bytes` as its body.
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        fields: &[(String, Vec<u8>)],
        bytes: Bytes,
        if_match: Option<u64>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to the daemon")?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "skiff");
        for (name, value) in fields {
            req = req.header(name.as_str(), value.as_slice());
        }
        if let Some(version) = if_match {
            req = req.header(hyper::header::IF_MATCH, format!("\"{version}\""));
        }
        if let Some(remote) = &self.remote {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", remote.token),
            );
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

    /// POSTs `body` with `fields` (an event in binary or structured mode) and parses
    /// the JSON answer.
    pub fn post_raw<T: DeserializeOwned>(
        &self,
        path: &str,
        fields: &[(String, Vec<u8>)],
        body: Vec<u8>,
    ) -> anyhow::Result<T> {
        self.runtime.block_on(async {
            let resp = self
                .send_raw(Method::POST, path, fields, Bytes::from(body), None)
                .await?;
            let bytes = resp.into_body().collect().await?.to_bytes();
            serde_json::from_slice(&bytes).context("reading the daemon's answer")
        })
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
        let bytes = self.call_for_bytes(method, path, body, version)?;
        serde_json::from_slice(&bytes).context("reading the daemon's answer")
    }

    /// Sends a GET and returns the answer's body as it came, for a caller that reads it
    /// in place (borrowing its strings instead of copying each).
    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Bytes> {
        self.call_for_bytes(Method::GET, path, None, None)
    }

    /// Sends a request and returns the answer's body unparsed.
    fn call_for_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        version: Option<u64>,
    ) -> anyhow::Result<Bytes> {
        self.runtime.block_on(async {
            let resp = self.send(method, path, body, version).await?;
            Ok(resp.into_body().collect().await?.to_bytes())
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
