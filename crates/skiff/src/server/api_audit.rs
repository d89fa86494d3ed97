//! The audit log in the API: every request that writes (any method but GET and HEAD) is
//! recorded after it is answered, with who asked and the answer's status; and
//! `GET /v1/audit?limit=N` reads the newest entries.

use super::api::{ApiError, AppState};
use axum::extract::{Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;

/// Who asks over the root-only unix socket.
pub(super) const UNIX_SOCKET_USER: &str = "root (unix socket)";

pub(super) fn route_table() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/v1/audit", get(read))]
}

/// Records each write once it is answered, and each request refused for want of a
/// token or of rights (401, 403).
pub(super) async fn record(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    // Publishing is the data path (many a second), not a change to the platform.
    let publish = request.uri().path().ends_with("/events");
    let action = format!("{} {}", request.method(), request.uri().path());
    let response = next.run(request).await;
    let denied = matches!(response.status().as_u16(), 401 | 403);
    let published = publish && response.status().is_success();
    if (writes && !published) || denied {
        let who = response
            .extensions()
            .get::<super::api_auth::Who>()
            .map_or(UNIX_SOCKET_USER.to_owned(), |w| w.0.clone());
        let status = response.status();
        let result = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        );
        let ctl = std::sync::Arc::clone(&s.ctl);
        // Recorded before the answer goes out: whoever saw the answer finds the entry.
        let _ =
            tokio::task::spawn_blocking(move || ctl.record_audit(&who, &action, result.trim_end()))
                .await;
    }
    response
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

async fn read(
    State(s): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    Ok(Json(s.ctl.audit_log(q.limit)?).into_response())
}
