//! The tokens part of the REST API: each request becomes one [`TokenCommand`]. A new
//! token's text is in the answer to its creation, and nowhere else.
//!
//! - `POST   /v1/tokens`           make one (`{name, role, services}`)
//! - `GET    /v1/tokens`           list (never the tokens themselves)
//! - `DELETE /v1/tokens/{name}`    revoke

use super::api::{ApiError, AppState};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, MethodRouter};
use axum::Json;
use skiff_control::documents::TokenRequest;
use skiff_control::tokens::{TokenAnswer, TokenCommand};
use skiff_control::ControlError;

pub(super) fn route_table() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/v1/tokens", get(list).post(create)),
        ("/v1/tokens/{name}", delete(revoke)),
    ]
}

async fn run(s: &AppState, command: TokenCommand) -> Result<Response, ApiError> {
    Ok(match s.ctl.execute_token(command).await? {
        TokenAnswer::Created(made) => Json(made).into_response(),
        TokenAnswer::Tokens(list) => Json(list).into_response(),
        TokenAnswer::Revoked(name) => Json(serde_json::json!({ "revoked": name })).into_response(),
    })
}

async fn create(
    State(s): State<AppState>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let role = req
        .role
        .parse()
        .map_err(|e: String| ApiError::from(ControlError::bad_field("role", e)))?;
    run(
        &s,
        TokenCommand::Create {
            name: req.name,
            role,
            services: req.services,
        },
    )
    .await
}

async fn list(State(s): State<AppState>) -> Result<Response, ApiError> {
    run(&s, TokenCommand::List).await
}

async fn revoke(State(s): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    run(&s, TokenCommand::Revoke { name }).await
}
