//! The secrets part of the REST API: each request becomes one [`SecretCommand`]. Values
//! come in (base64 `data`, text `stringData`) and never go out: answers name secrets,
//! versions and keys.
//!
//! - `GET    /v1/secrets`                               list
//! - `GET    /v1/secrets/{name}`                        its versions
//! - `PUT    /v1/secrets/{name}`                        create, with version 1
//! - `DELETE /v1/secrets/{name}`                        remove, with every version
//! - `POST   /v1/secrets/{name}/versions`               add the next version
//! - `PATCH  /v1/secrets/{name}/versions/{version}`     `{"state": "enabled"|"disabled"}`

use super::api::{ApiError, AppState};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use skiff_control::documents::{SecretVersionPatch, SecretWrite};
use skiff_control::secrets::{SecretAnswer, SecretCommand};
use skiff_control::ControlError;

pub(super) fn route_table() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/v1/secrets", get(list)),
        (
            "/v1/secrets/{name}",
            get(describe).put(create).delete(remove),
        ),
        ("/v1/secrets/{name}/versions", post(add_version)),
        (
            "/v1/secrets/{name}/versions/{version}",
            axum::routing::patch(set_state),
        ),
    ]
}

async fn run(s: &AppState, command: SecretCommand) -> Result<Response, ApiError> {
    Ok(match s.ctl.execute_secret(command).await? {
        SecretAnswer::Secrets(list) => Json(list).into_response(),
        SecretAnswer::Secret(detail) => Json(detail).into_response(),
        SecretAnswer::Removed(name) => Json(serde_json::json!({ "removed": name })).into_response(),
    })
}

/// A version's data, and the services named (which only a new secret takes).
fn data_of(
    body: Result<Json<SecretWrite>, JsonRejection>,
) -> Result<(skiff_secrets::SecretData, Vec<String>), ApiError> {
    let Json(mut write) = body?;
    let services = std::mem::take(&mut write.services);
    let data = write
        .into_data()
        .map_err(|e| ApiError::from(ControlError::bad_field("data", e)))?;
    Ok((data, services))
}

async fn list(State(s): State<AppState>) -> Result<Response, ApiError> {
    run(&s, SecretCommand::List).await
}

async fn describe(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    run(&s, SecretCommand::Describe { name }).await
}

async fn create(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<SecretWrite>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (data, services) = data_of(body)?;
    let command = SecretCommand::Create {
        name,
        data,
        services,
    };
    run(&s, command).await
}

async fn add_version(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<SecretWrite>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (data, services) = data_of(body)?;
    if !services.is_empty() {
        let why = "a secret's services are set when it is made, not per version";
        return Err(ApiError::from(ControlError::bad_field("services", why)));
    }
    run(&s, SecretCommand::AddVersion { name, data }).await
}

async fn set_state(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    body: Result<Json<SecretVersionPatch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(patch) = body?;
    let version: u32 = version.parse().map_err(|_| {
        ApiError::from(ControlError::bad_field(
            "version",
            format!("version {version:?} is not a version number"),
        ))
    })?;
    let enabled = match patch.state.as_str() {
        "enabled" => true,
        "disabled" => false,
        other => {
            return Err(ApiError::from(ControlError::bad_field(
                "state",
                format!("state {other:?} is neither \"enabled\" nor \"disabled\""),
            )))
        }
    };
    run(
        &s,
        SecretCommand::SetEnabled {
            name,
            version,
            enabled,
        },
    )
    .await
}

async fn remove(State(s): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    run(&s, SecretCommand::Remove { name }).await
}
