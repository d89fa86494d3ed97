//! Serving an axum router over TLS (the registry's and the API's TCP listeners): one
//! task per connection, a bounded handshake, descriptor exhaustion handled by the
//! router crate's acceptor.

use axum::body::Body;
use std::sync::Arc;
use tokio::sync::watch;

/// Reads a certificate chain and its key (PEM) into a TLS server config.
pub fn config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<tokio_rustls::rustls::ServerConfig>> {
    use anyhow::Context;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading a private key from {}", key.display()))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("pairing the certificate and key of {}", cert.display()))?;
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `stop` turns true; `name` names the
/// listener in the log.
pub async fn serve(
    name: &'static str,
    app: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    // Refused connections are closed without a word: a plain-text 503 means nothing to
    // a TLS client.
    let mut accepting = skiff_router::accept::Acceptor::new(name, b"");
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.changed() => return,
            accepted = accepting.next(&listener) => accepted,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // A handshake that stalls must not hold a task forever.
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let Ok(Ok(tls)) = handshake.await else { return };
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        use tower::ServiceExt;
                        app.oneshot(request.map(Body::new)).await
                    }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}
