//! The built-in registry's HTTP side: the OCI distribution API (`/v2/…`) over
//! `skiff_registry::Hosted`, so `skopeo copy`, `buildah push` and `podman push` to skiff
//! work unmodified. Every request needs HTTP basic auth whose password is the token in
//! `$SKIFF_HOME/registry.token` (any user name, as GCR's `oauth2accesstoken`).
//!
//! Paths carry repository names with slashes, so one handler parses them; the storage
//! rules (digests checked, images installed on manifest push) are `Hosted`'s.

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use skiff_registry::{Hosted, HostedError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

const API_VERSION: &str = "registry/2.0";

#[derive(Clone)]
struct Registry {
    hosted: Arc<Hosted>,
    token: Arc<String>,
}

/// Reads the registry token, making one (32 random bytes, hex, mode 0600) at first start.
pub fn token(home: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.join("registry.token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        if token.len() >= 32 {
            return Ok(token);
        }
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("drawing a registry token: {e}"))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

fn router(hosted: Arc<Hosted>, token: String) -> axum::Router {
    let state = Registry {
        hosted,
        token: Arc::new(token),
    };
    axum::Router::new()
        .route("/v2", axum::routing::any(handle))
        .route("/v2/", axum::routing::any(handle))
        .route("/v2/{*path}", axum::routing::any(handle))
        .with_state(state)
}

/// Serves the registry over TLS on `listener` until `stop` turns true.
pub async fn serve_tls(
    hosted: Arc<Hosted>,
    token: String,
    listener: tokio::net::TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    stop: watch::Receiver<bool>,
) {
    super::tls::serve("registry", router(hosted, token), listener, tls, stop).await
}

/// Serves the registry on `listener` until `stop` turns true.
pub async fn serve(
    hosted: Arc<Hosted>,
    token: String,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let app = router(hosted, token);
    let shutdown = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("registry: {e}");
    }
}

/// Binds the registry's address; `None` (with a warning) when it is taken, so a host
/// with a registry of its own on that port still gets a working daemon.
pub async fn bind(addr: SocketAddr) -> Option<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(
                "registry off: cannot listen on {addr} ({e}); give skiff server --registry ADDR"
            );
            None
        }
    }
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    use base64::Engine as _;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(password) = decoded.splitn(2, |b| *b == b':').nth(1) else {
        return false;
    };
    // Compared in constant time: how much of it matched must not show in the timing.
    password.len() == token.len()
        && password
            .iter()
            .zip(token.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    r
}

fn refused(e: HostedError) -> Response {
    let status = match &e {
        HostedError::BlobUnknown(_)
        | HostedError::UploadUnknown(_)
        | HostedError::ManifestUnknown(_) => StatusCode::NOT_FOUND,
        HostedError::TooMany => StatusCode::TOO_MANY_REQUESTS,
        HostedError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.code(), &e.to_string())
}

fn with_headers(status: StatusCode, headers: &[(&str, String)]) -> Response {
    let mut r = status.into_response();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            r.headers_mut().insert(n, v);
        }
    }
    r.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    r
}

/// What a `/v2/…` path names.
enum Target<'a> {
    Base,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Uploads(&'a str, Option<&'a str>),
    Blob(&'a str, &'a str),
}

fn target(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix("/v2")?.trim_start_matches('/');
    if rest.is_empty() {
        return Some(Target::Base);
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return Some(Target::Tags(repo));
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return Some(Target::Manifest(repo, reference));
    }
    if let Some(repo) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Target::Uploads(repo, None));
    }
    if let Some((repo, id)) = rest.rsplit_once("/blobs/uploads/") {
        return Some(Target::Uploads(repo, Some(id)));
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        return Some(Target::Blob(repo, digest));
    }
    None
}

async fn handle(
    State(r): State<Registry>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !authorized(&headers, &r.token) {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"skiff\""),
        );
        return resp;
    }
    let Some(target) = target(uri.path()) else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such endpoint");
    };
    let hosted = &r.hosted;
    let result = match (target, &method) {
        (Target::Base, _) => Ok(with_headers(StatusCode::OK, &[])),
        (Target::Tags(repo), &Method::GET) => hosted.tags(repo).map(|tags| {
            let mut resp =
                axum::Json(serde_json::json!({"name": repo, "tags": tags})).into_response();
            resp.headers_mut().insert(
                "docker-distribution-api-version",
                HeaderValue::from_static(API_VERSION),
            );
            resp
        }),
        (Target::Manifest(repo, reference), m) if m == Method::GET || m == Method::HEAD => {
            hosted.manifest(repo, reference).map(|stored| {
                let headers = [
                    ("content-type", stored.media_type.clone()),
                    ("docker-content-digest", stored.digest.to_string()),
                    ("content-length", stored.bytes.len().to_string()),
                ];
                let mut resp = with_headers(StatusCode::OK, &headers);
                if method == Method::GET {
                    *resp.body_mut() = Body::from(stored.bytes);
                }
                resp
            })
        }
        (Target::Manifest(repo, reference), &Method::PUT) => {
            match axum::body::to_bytes(body, 4 << 20).await {
                Ok(bytes) => hosted.put_manifest(repo, reference, &bytes).map(|digest| {
                    with_headers(
                        StatusCode::CREATED,
                        &[
                            ("location", format!("/v2/{repo}/manifests/{digest}")),
                            ("docker-content-digest", digest.to_string()),
                        ],
                    )
                }),
                Err(_) => Err(HostedError::ManifestInvalid("larger than 4 MiB".into())),
            }
        }
        (Target::Manifest(repo, reference), &Method::DELETE) => hosted
            .delete_manifest(repo, reference)
            .map(|()| with_headers(StatusCode::ACCEPTED, &[])),
        (Target::Blob(repo, _), _) if !skiff_registry::valid_repository(repo) => {
            Err(HostedError::NameInvalid(repo.to_owned()))
        }
        (Target::Blob(_, digest), m) if m == Method::GET || m == Method::HEAD => {
            blob(hosted, digest, m == Method::GET).await
        }
        (Target::Uploads(repo, None), &Method::POST) => {
            start_upload(hosted, repo, &query, body).await
        }
        (Target::Uploads(repo, Some(id)), &Method::PATCH) => append(hosted, id, body)
            .await
            .map(|size| upload_accepted(repo, id, size)),
        (Target::Uploads(repo, Some(id)), &Method::PUT) => {
            finish_upload(hosted, repo, id, &query, body).await
        }
        (Target::Uploads(repo, Some(id)), &Method::GET) => hosted.upload_size(id).map(|size| {
            let mut resp = upload_accepted(repo, id, size);
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }),
        (Target::Uploads(_, Some(id)), &Method::DELETE) => hosted
            .cancel(id)
            .map(|()| with_headers(StatusCode::NO_CONTENT, &[])),
        _ => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "method not allowed here",
            )
        }
    };
    result.unwrap_or_else(refused)
}

fn upload_accepted(repo: &str, id: &str, size: u64) -> Response {
    let range = if size == 0 {
        "0-0".to_owned()
    } else {
        format!("0-{}", size - 1)
    };
    with_headers(
        StatusCode::ACCEPTED,
        &[
            ("location", format!("/v2/{repo}/blobs/uploads/{id}")),
            ("range", range),
            ("docker-upload-uuid", id.to_owned()),
            ("content-length", "0".to_owned()),
        ],
    )
}

async fn blob(hosted: &Hosted, digest: &str, with_body: bool) -> Result<Response, HostedError> {
    let path = hosted.blob_path(digest)?;
    let size = hosted
        .blob_size(digest)?
        .ok_or_else(|| HostedError::BlobUnknown(digest.to_owned()))?;
    let mut resp = with_headers(
        StatusCode::OK,
        &[
            ("content-type", "application/octet-stream".to_owned()),
            ("docker-content-digest", digest.to_owned()),
            ("content-length", size.to_string()),
        ],
    );
    if with_body {
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| HostedError::Internal(e.to_string()))?;
        let chunks = futures_util::stream::unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(Bytes::from(buf)), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        *resp.body_mut() = Body::from_stream(chunks);
    }
    Ok(resp)
}

/// Streams a request body into upload `id`; its size after.
async fn append(hosted: &Hosted, id: &str, body: Body) -> Result<u64, HostedError> {
    let mut size = hosted.upload_size(id)?;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| HostedError::Internal(format!("reading the body: {e}")))?;
        size = hosted.append(id, &chunk)?;
    }
    Ok(size)
}

async fn start_upload(
    hosted: &Hosted,
    repo: &str,
    query: &HashMap<String, String>,
    body: Body,
) -> Result<Response, HostedError> {
    // Cross-repository mount: every blob is in one store, so it is there or not.
    if let Some(digest) = query.get("mount") {
        if hosted.blob_size(digest)?.is_some() {
            return Ok(with_headers(
                StatusCode::CREATED,
                &[
                    ("location", format!("/v2/{repo}/blobs/{digest}")),
                    ("docker-content-digest", digest.clone()),
                ],
            ));
        }
    }
    let id = hosted.start_upload(repo)?;
    // Monolithic: the whole blob in this request.
    if let Some(digest) = query.get("digest") {
        append(hosted, &id, body).await?;
        let digest = hosted.finish(&id, digest)?;
        return Ok(with_headers(
            StatusCode::CREATED,
            &[
                ("location", format!("/v2/{repo}/blobs/{digest}")),
                ("docker-content-digest", digest.to_string()),
            ],
        ));
    }
    Ok(upload_accepted(repo, &id, 0))
}

async fn finish_upload(
    hosted: &Hosted,
    repo: &str,
    id: &str,
    query: &HashMap<String, String>,
    body: Body,
) -> Result<Response, HostedError> {
    let digest = query
        .get("digest")
        .ok_or_else(|| HostedError::DigestInvalid("no digest given".into()))?;
    append(hosted, id, body).await?;
    let digest = hosted.finish(id, digest)?;
    Ok(with_headers(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{repo}/blobs/{digest}")),
            ("docker-content-digest", digest.to_string()),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_what_the_distribution_api_says() {
        assert!(matches!(target("/v2/"), Some(Target::Base)));
        assert!(matches!(
            target("/v2/team/app/tags/list"),
            Some(Target::Tags("team/app"))
        ));
        assert!(matches!(
            target("/v2/team/app/manifests/1"),
            Some(Target::Manifest("team/app", "1"))
        ));
        assert!(matches!(
            target("/v2/app/blobs/uploads/"),
            Some(Target::Uploads("app", None))
        ));
        assert!(matches!(
            target("/v2/app/blobs/uploads/abc"),
            Some(Target::Uploads("app", Some("abc")))
        ));
        assert!(matches!(
            target("/v2/app/blobs/sha256:00"),
            Some(Target::Blob("app", "sha256:00"))
        ));
        assert!(target("/v1/x").is_none());
    }

    #[test]
    fn only_the_token_authorizes() {
        use base64::Engine as _;
        let basic = |s: &str| {
            let mut h = HeaderMap::new();
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            );
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
            h
        };
        assert!(authorized(&basic("anyone:tok3n"), "tok3n"));
        assert!(!authorized(&basic("anyone:tok3"), "tok3n"));
        assert!(!authorized(&basic("tok3n"), "tok3n"));
        assert!(!authorized(&HeaderMap::new(), "tok3n"));
    }
}
