//! Who may use the API over TCP: every request carries `Authorization: Bearer <token>`;
//! a missing, malformed, unknown, forged or revoked token is 401, a token whose role or
//! services do not cover the request is 403. The identity goes into the response for
//! the audit log. Over the root-only unix socket none of this applies.

use super::api::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use skiff_control::documents::{ErrorBody, ErrorDetail};
use skiff_core::ApiAction;

/// Who a request was made as (in the response's extensions, for the audit log).
#[derive(Clone, Debug)]
pub(super) struct Who(pub String);

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn refused(status: StatusCode, kind: &str, message: String, who: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            kind: kind.to_owned(),
            message,
            field: None,
            log_tail: None,
        },
    };
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response.extensions_mut().insert(Who(who));
    response
}

/// What a request does, and the service it is about (`None`: no one service).
pub(super) fn action_of(method: &Method, path: &str) -> (ApiAction, Option<String>) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let reads = matches!(*method, Method::GET | Method::HEAD);
    let service = |i: usize| parts.get(i).map(|s| s.to_string());
    match parts.as_slice() {
        ["v1", "services", _, "logs"] => (ApiAction::ReadLogs, service(2)),
        ["v1", "services", ..] if reads => (ApiAction::Read, service(2)),
        ["v1", "services", ..] => (ApiAction::Deploy, service(2)),
        ["v1", "secrets" | "configmaps", ..] if reads => (ApiAction::ReadSecretNames, None),
        ["v1", "secrets" | "configmaps", ..] => (ApiAction::WriteSecrets, None),
        ["v1", "tokens", ..] => (ApiAction::ManageTokens, None),
        ["v1", "topics", _, "events"] => (ApiAction::Publish, None),
        ["v1", "schedules" | "topics" | "subscriptions", ..] if !reads => {
            (ApiAction::ManageEvents, None)
        }
        ["v1", "audit", ..] => (ApiAction::ReadAudit, None),
        _ => (ApiAction::Read, None),
    }
}

/// Lets a request through only with a token that allows it.
pub(super) async fn require_token(
    State(s): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(request.headers()) else {
        return refused(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this API needs a token: Authorization: Bearer <token> (skiff token create)".into(),
            "unauthenticated".into(),
        );
    };
    let identity = match s.ctl.authenticate(token) {
        Ok(identity) => identity,
        Err(e) => {
            // Why, in the daemon's log only: the caller learns nothing about tokens.
            tracing::info!("API request refused: {e}");
            return refused(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the token is not valid".into(),
                "invalid token".into(),
            );
        }
    };
    let (action, service) = action_of(request.method(), request.uri().path());
    let who = format!("token {}", identity.name);
    if !identity.grant.allows(action, service.as_deref()) {
        let what = match &service {
            Some(s) => format!(" on service {s}"),
            None => String::new(),
        };
        return refused(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {} ({}) may not do this{what}",
                identity.name, identity.grant.role
            ),
            who,
        );
    }
    // Handlers that list narrow the list to what the grant covers.
    request.extensions_mut().insert(identity.grant.clone());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(Who(who));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_what_they_do_and_the_service_they_touch() {
        let cases = [
            (Method::GET, "/v1/services", ApiAction::Read, None),
            (Method::GET, "/v1/services/a", ApiAction::Read, Some("a")),
            (
                Method::PATCH,
                "/v1/services/a",
                ApiAction::Deploy,
                Some("a"),
            ),
            (
                Method::PUT,
                "/v1/services/a/traffic",
                ApiAction::Deploy,
                Some("a"),
            ),
            (
                Method::POST,
                "/v1/services/a/rollback",
                ApiAction::Deploy,
                Some("a"),
            ),
            (
                Method::DELETE,
                "/v1/services/a",
                ApiAction::Deploy,
                Some("a"),
            ),
            (
                Method::GET,
                "/v1/services/b/logs",
                ApiAction::ReadLogs,
                Some("b"),
            ),
            (
                Method::GET,
                "/v1/secrets/s",
                ApiAction::ReadSecretNames,
                None,
            ),
            (Method::PUT, "/v1/secrets/s", ApiAction::WriteSecrets, None),
            (
                Method::PUT,
                "/v1/configmaps/c",
                ApiAction::WriteSecrets,
                None,
            ),
            (Method::GET, "/v1/tokens", ApiAction::ManageTokens, None),
            (Method::GET, "/v1/audit", ApiAction::ReadAudit, None),
        ];
        for (method, path, action, service) in cases {
            assert_eq!(
                action_of(&method, path),
                (action, service.map(str::to_owned)),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn only_bearer_tokens_are_taken() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer skiff_x".parse().unwrap());
        assert_eq!(bearer(&h), Some("skiff_x"));
        h.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
