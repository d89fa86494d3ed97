//! A service's async invocations in the API: `GET /v1/services/{name}/invocations`
//! (newest first, `?limit=N`) and `…/invocations/{id}`. Their bodies never come back.

use super::api::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use skiff_control::documents::{InvocationInfo, RedriveRequest, Redriven};
use skiff_control::ControlError;

pub(super) fn route_table() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/v1/services/{name}/invocations", get(list)),
        ("/v1/services/{name}/invocations/redrive", post(redrive)),
        ("/v1/services/{name}/invocations/{id}", get(one)),
    ]
}

async fn redrive(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<RedriveRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let ctl = std::sync::Arc::clone(&s.ctl);
    let redriven = tokio::task::spawn_blocking(move || ctl.redrive(&name, &request.ids))
        .await
        .map_err(|e| ApiError::from(ControlError::internal(e.to_string())))??;
    Ok(Json(Redriven { redriven }).into_response())
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

async fn list(
    State(s): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let ctl = std::sync::Arc::clone(&s.ctl);
    let records = tokio::task::spawn_blocking(move || ctl.invocations(&name, q.limit))
        .await
        .map_err(|e| ApiError::from(ControlError::internal(e.to_string())))??;
    let infos: Vec<InvocationInfo> = records.iter().map(InvocationInfo::from).collect();
    Ok(Json(infos).into_response())
}

async fn one(
    State(s): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let record = s.ctl.invocation(&name, &id)?;
    Ok(Json(InvocationInfo::from(&record)).into_response())
}
