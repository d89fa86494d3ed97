//! The control-plane REST API on a root-only unix socket. Requests are parsed into typed
//! documents at the edge (`apitypes`); every error is JSON saying what was wrong:
//! `{"error": {"kind": ..., "message": ..., "field": ...}}`.
//!
//! - `GET    /v1/services`             list
//! - `PUT    /v1/services/{name}`      deploy a revision (`{"spec": {...}}`)
//! - `GET    /v1/services/{name}`      describe
//! - `DELETE /v1/services/{name}`      remove
//! - `GET    /v1/services/{name}/logs?since=RFC3339&follow=true`  NDJSON lines

use super::services::{self, ApiError};
use super::Ctx;
use crate::apitypes::{DeployRequest, ErrorBody, ErrorDetail, RollbackRequest, TrafficRequest};
use anyhow::Context;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use bytes::Bytes;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

#[derive(Clone)]
struct AppState {
    ctx: Arc<Ctx>,
    stop: watch::Receiver<bool>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind.to_owned(),
                message: self.message,
                field: self.field,
                log_tail: self.log_tail,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Binds the API socket: refuses to take over one a live daemon answers on, replaces a
/// stale one, and makes it root-only.
pub fn bind(socket: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the socket directory {}", dir.display()))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            anyhow::bail!(
                "another skiff server is already listening on {}",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing the stale socket {}", socket.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("securing {}", socket.display()))?;
    Ok(listener)
}

/// Serves the API until `stop` turns true.
pub async fn serve(ctx: Arc<Ctx>, listener: tokio::net::UnixListener, stop: watch::Receiver<bool>) {
    let state = AppState {
        ctx,
        stop: stop.clone(),
    };
    let app = axum::Router::new()
        .route("/v1/services", get(list))
        .route(
            "/v1/services/{name}",
            get(describe).put(deploy).delete(remove),
        )
        .route("/v1/services/{name}/logs", get(logs))
        .route("/v1/services/{name}/traffic", put(traffic))
        .route("/v1/services/{name}/rollback", post(rollback))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
        })
        .with_state(state);
    let mut stop = stop;
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!("control-plane API: {e}");
    }
}

async fn list(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(services::list(&s.ctx)?).into_response())
}

async fn describe(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(services::describe(&s.ctx, &name)?).into_response())
}

/// A body that is not the document the endpoint takes is the client's mistake: 400.
impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::invalid_request(e.body_text())
    }
}

async fn deploy(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<DeployRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let deployed = services::deploy(&s.ctx, &name, req).await?;
    Ok(Json(deployed).into_response())
}

async fn traffic(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<TrafficRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    Ok(Json(services::set_traffic(&s.ctx, &name, req.traffic).await?).into_response())
}

async fn rollback(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<RollbackRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    Ok(Json(services::rollback(&s.ctx, &name, req.revision).await?).into_response())
}

async fn remove(State(s): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    services::remove(&s.ctx, &name).await?;
    Ok(Json(serde_json::json!({ "removed": name })).into_response())
}

#[derive(serde::Deserialize)]
struct LogQuery {
    since: Option<String>,
    #[serde(default)]
    follow: bool,
}

async fn logs(
    State(s): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    if let Some(since) = &q.since {
        if !looks_like_rfc3339(since) {
            return Err(ApiError::invalid_request(format!(
                "since={since:?} is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)"
            )));
        }
    }
    let (lines, offsets) = super::logs::collect(&s.ctx, &name, q.since.as_deref())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn({
        let ctx = Arc::clone(&s.ctx);
        let stop = s.stop.clone();
        async move {
            for line in lines {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if q.follow {
                super::logs::follow(ctx, name, offsets, tx, stop).await;
            }
        }
    });
    let body = axum::body::Body::new(NdjsonBody(rx));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn looks_like_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && s.ends_with('Z')
}

/// A streaming body of one JSON document per line, fed from a channel.
struct NdjsonBody(mpsc::Receiver<crate::apitypes::LogLine>);

impl http_body::Body for NdjsonBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|line| {
            line.map(|l| {
                let mut v = serde_json::to_vec(&l).unwrap_or_default();
                v.push(b'\n');
                Ok(http_body::Frame::data(Bytes::from(v)))
            })
        })
    }
}
