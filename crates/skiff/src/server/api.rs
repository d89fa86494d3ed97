//! The control-plane REST API on a root-only unix socket: each request becomes one typed
//! [`Command`] and each [`ControlError`] one status, here and nowhere else. Every error is
//! JSON saying what was wrong: `{"error": {"kind": ..., "message": ..., "field": ...}}`.
//! `docs/openapi.yaml` documents every route and document; a test keeps the two in step.
//!
//! - `GET    /v1/services`                     list
//! - `GET    /v1/services/{name}`              describe (with `ETag: "VERSION"`)
//! - `PUT    /v1/services/{name}`              deploy a revision from a whole spec
//! - `PATCH  /v1/services/{name}`              deploy a revision from the latest spec, changed
//! - `DELETE /v1/services/{name}`              remove
//! - `PUT    /v1/services/{name}/traffic`      set the traffic split
//! - `POST   /v1/services/{name}/rollback`     all traffic back to an earlier revision
//! - `GET    /v1/services/{name}/logs?since=RFC3339&follow=true`  NDJSON lines
//! - `/v1/secrets…`: see `api_secrets.rs`; `/v1/configmaps…`: `api_configmaps.rs`
//! - `GET    /v1/audit?limit=N`: the audit log (`api_audit.rs`), which records every write
//! - `/v1/tokens…`: API tokens (`api_tokens.rs`)
//!
//! Writes take `If-Match: "VERSION"` (the `version` describe shows): a service that is no
//! longer at that version, or no longer exists, answers 409 and nothing changes.

use anyhow::Context;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::Json;
use bytes::Bytes;
use skiff_control::documents::{
    DeployRequest, ErrorBody, ErrorDetail, LogLine, RollbackRequest, TrafficRequest, UpdateRequest,
};
use skiff_control::{Answer, Command, Control, ControlError, Precondition};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

#[derive(Clone)]
pub(super) struct AppState {
    pub(super) ctl: Arc<Control>,
    stop: watch::Receiver<bool>,
}

/// A control-plane error as the API answers it.
pub(super) struct ApiError(ControlError);

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError(e)
    }
}

/// A body or query that is not the document the endpoint takes is the client's mistake.
impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError(ControlError::TooLarge(format!(
                "the request body is too large: {}",
                e.body_text()
            )));
        }
        ApiError(ControlError::invalid_request(e.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError(ControlError::invalid_request(e.body_text()))
    }
}

fn status_of(e: &ControlError) -> StatusCode {
    match e {
        ControlError::InvalidRequest { .. } | ControlError::InvalidSpec { .. } => {
            StatusCode::BAD_REQUEST
        }
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Conflict(_) => StatusCode::CONFLICT,
        ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
        ControlError::StartFailed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ControlError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ControlError::Upstream(_) => StatusCode::BAD_GATEWAY,
        ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = ErrorBody {
            error: ErrorDetail {
                kind: e.kind().to_owned(),
                message: e.to_string(),
                field: e.field().map(str::to_owned),
                log_tail: e.log_tail().map(str::to_owned),
            },
        };
        (status_of(&e), Json(body)).into_response()
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

/// Every path the API serves, with its methods' handlers; `docs/openapi.yaml` lists the
/// same paths (a test below checks it, an end-to-end test checks the methods).
fn route_table() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/v1/services", get(list)),
        (
            "/v1/services/{name}",
            get(describe).put(deploy).patch(update).delete(remove),
        ),
        ("/v1/services/{name}/logs", get(logs)),
        ("/v1/services/{name}/traffic", put(traffic)),
        ("/v1/services/{name}/rollback", post(rollback)),
    ]
    .into_iter()
    .chain(super::api_secrets::route_table())
    .chain(super::api_configmaps::route_table())
    .chain(super::api_audit::route_table())
    .chain(super::api_tokens::route_table())
    .chain(super::api_invocations::route_table())
    .chain(super::api_events::route_table())
    .collect()
}

/// The API's routes, with their handlers; over TCP (`tokens`), only for requests with
/// a token that allows them. Writes and refusals go to the audit log.
fn routes(state: AppState, tokens: bool) -> axum::Router {
    let mut app = route_table()
        .into_iter()
        .fold(axum::Router::new(), |app, (path, methods)| {
            app.route(path, methods)
        })
        .fallback(|| async { ApiError(ControlError::NotFound("no such API endpoint".into())) });
    if tokens {
        app = app.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::api_auth::require_token,
        ));
    }
    app.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        super::api_audit::record,
    ))
    .with_state(state)
}

/// The API as served over TCP: every request needs a token (`api_auth.rs`).
pub fn tcp_routes(ctl: Arc<Control>, stop: watch::Receiver<bool>) -> axum::Router {
    routes(AppState { ctl, stop }, true)
}

/// Serves the API until `stop` turns true.
pub async fn serve(
    ctl: Arc<Control>,
    listener: tokio::net::UnixListener,
    stop: watch::Receiver<bool>,
) {
    let app = routes(
        AppState {
            ctl,
            stop: stop.clone(),
        },
        false,
    );
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

/// The precondition an `If-Match` header sets: `"VERSION"` (or `*`, no condition).
fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(Precondition::NONE);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(Precondition::NONE);
    }
    text.trim_matches('"')
        .parse()
        .map(|v| Precondition { version: Some(v) })
        .map_err(|_| {
            ApiError(ControlError::bad_field(
                "If-Match",
                format!("If-Match {text:?} is not a service version such as \"12\""),
            ))
        })
}

/// A long list as JSON, written into a buffer sized for it up front: grown by doubling
/// from axum's 128 bytes, ten thousand services' 1.8 MB were copied over a dozen times,
/// each time into memory not yet touched.
fn json_list<T: serde::Serialize>(items: &[T]) -> Response {
    /// Bytes of a listed item, about (a service's line is ~190).
    const ITEM_BYTES: usize = 256;
    let mut body = Vec::with_capacity(items.len().saturating_mul(ITEM_BYTES) + 2);
    match serde_json::to_writer(&mut body, items) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            ApiError(ControlError::internal(format!("writing the list: {e}"))).into_response()
        }
    }
}

async fn run(s: &AppState, command: Command) -> Result<Response, ApiError> {
    Ok(match s.ctl.execute(command).await? {
        Answer::Services(list) => json_list(&list),
        Answer::Service(detail) => {
            let etag = format!("\"{}\"", detail.version);
            ([(header::ETAG, etag)], Json(detail)).into_response()
        }
        Answer::Deployed(d) => Json(d).into_response(),
        Answer::Removed(name) => Json(serde_json::json!({ "removed": name })).into_response(),
    })
}

/// Every service, or over TCP, those the token's grant covers.
async fn list(
    State(s): State<AppState>,
    grant: Option<axum::Extension<skiff_core::Grant>>,
) -> Result<Response, ApiError> {
    let Some(axum::Extension(grant)) = grant else {
        return run(&s, Command::List).await;
    };
    match s.ctl.execute(Command::List).await? {
        Answer::Services(list) => {
            let covered: Vec<_> = list
                .into_iter()
                .filter(|svc| grant.allows(skiff_core::ApiAction::Read, Some(&svc.name)))
                .collect();
            Ok(json_list(&covered))
        }
        _ => Err(ApiError(ControlError::internal(
            "listing services answered otherwise",
        ))),
    }
}

async fn describe(
    State(s): State<AppState>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    run(&s, Command::Describe { service }).await
}

async fn deploy(
    State(s): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Result<Json<DeployRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let precondition = precondition(&headers)?;
    run(
        &s,
        Command::Deploy {
            service,
            request,
            precondition,
        },
    )
    .await
}

async fn update(
    State(s): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Result<Json<UpdateRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let precondition = precondition(&headers)?;
    run(
        &s,
        Command::Update {
            service,
            request,
            precondition,
        },
    )
    .await
}

async fn traffic(
    State(s): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Result<Json<TrafficRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let precondition = precondition(&headers)?;
    run(
        &s,
        Command::SetTraffic {
            service,
            traffic: req.traffic,
            precondition,
        },
    )
    .await
}

async fn rollback(
    State(s): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Result<Json<RollbackRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let precondition = precondition(&headers)?;
    run(
        &s,
        Command::Rollback {
            service,
            revision: req.revision,
            precondition,
        },
    )
    .await
}

async fn remove(
    State(s): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let precondition = precondition(&headers)?;
    run(
        &s,
        Command::Remove {
            service,
            precondition,
        },
    )
    .await
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
    let Query(q) = query?;
    let history = skiff_control::logs::history(&s.ctl, &name, q.since.as_deref())?;
    // A bounded channel: the files are read as fast as the client takes the lines.
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn({
        let ctl = Arc::clone(&s.ctl);
        let stop = s.stop.clone();
        async move {
            let sender = tx.clone();
            let read = tokio::task::spawn_blocking(move || send_history(history, &sender, stop));
            let Ok(Some((positions, stop))) = read.await else {
                return;
            };
            if q.follow {
                skiff_control::logs::follow(ctl, name, positions, tx, stop).await;
            }
        }
    });
    let body = axum::body::Body::new(NdjsonBody(rx));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Sends the lines of `history` as the client takes them: where it stopped, or `None`
/// if the client left or the daemon is stopping.
fn send_history(
    mut history: skiff_control::logs::History,
    tx: &mpsc::Sender<LogLine>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<(
    std::collections::HashMap<String, skiff_control::logs::Position>,
    tokio::sync::watch::Receiver<bool>,
)> {
    for line in history.by_ref() {
        if tx.blocking_send(line).is_err() || *stop.borrow() {
            return None;
        }
    }
    Some((history.into_positions(), stop))
}

/// A streaming body of one JSON document per line, fed from a channel.
struct NdjsonBody(mpsc::Receiver<LogLine>);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_served_is_documented_and_every_documented_path_served() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
        let doc: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .expect("openapi.yaml has paths")
            .keys()
            .map(String::as_str)
            .collect();
        let mut served: Vec<&str> = route_table().into_iter().map(|(p, _)| p).collect();
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(
            served, documented,
            "docs/openapi.yaml and server/api.rs disagree"
        );
    }

    #[test]
    fn if_match_takes_a_quoted_version_or_a_star() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, v.parse().unwrap());
            precondition(&h)
        };
        assert_eq!(with("\"12\"").ok().unwrap().version, Some(12));
        assert_eq!(with("*").ok().unwrap(), Precondition::NONE);
        assert_eq!(
            precondition(&HeaderMap::new()).ok().unwrap(),
            Precondition::NONE
        );
        let bad = with("\"twelve\"").err().unwrap().0;
        assert_eq!(bad.field(), Some("If-Match"));
    }
}
