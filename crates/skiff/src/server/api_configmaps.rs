//! The config maps part of the REST API: each request becomes one [`ConfigMapCommand`].
//!
//! - `GET    /v1/configmaps`                 list, with values (they are settings)
//! - `GET    /v1/configmaps/{name}`          one
//! - `PUT    /v1/configmaps/{name}`          make or replace (`?create=true`: only make)
//! - `DELETE /v1/configmaps/{name}`          remove

use super::api::{ApiError, AppState};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use skiff_control::configmaps::{ConfigMapAnswer, ConfigMapCommand};
use skiff_control::documents::ConfigMapWrite;

pub(super) fn route_table() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/v1/configmaps", get(list)),
        (
            "/v1/configmaps/{name}",
            get(describe).put(put).delete(remove),
        ),
    ]
}

async fn run(s: &AppState, command: ConfigMapCommand) -> Result<Response, ApiError> {
    Ok(match s.ctl.execute_config_map(command).await? {
        ConfigMapAnswer::ConfigMaps(list) => Json(list).into_response(),
        ConfigMapAnswer::ConfigMap(detail) => Json(detail).into_response(),
        ConfigMapAnswer::Removed(name) => {
            Json(serde_json::json!({ "removed": name })).into_response()
        }
    })
}

async fn list(State(s): State<AppState>) -> Result<Response, ApiError> {
    run(&s, ConfigMapCommand::List).await
}

async fn describe(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    run(&s, ConfigMapCommand::Describe { name }).await
}

#[derive(serde::Deserialize)]
struct PutQuery {
    #[serde(default)]
    create: bool,
}

async fn put(
    State(s): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<ConfigMapWrite>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let Json(write) = body?;
    run(
        &s,
        ConfigMapCommand::Put {
            name,
            data: write.data,
            create_only: q.create,
        },
    )
    .await
}

async fn remove(State(s): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    run(&s, ConfigMapCommand::Remove { name }).await
}
