//! Event triggers in the REST API; each request becomes one [`TriggerCommand`], or a
//! publish.
//!
//! - `GET    /v1/schedules`, `GET|PUT|DELETE /v1/schedules/{name}` (PUT: `{"spec": …}`,
//!   `?create=true`: only make)
//! - `GET    /v1/topics`, `PUT|DELETE /v1/topics/{name}` (PUT makes it)
//! - `POST   /v1/topics/{name}/events`: publish a CloudEvent (binary or structured mode);
//!   202 once every matching subscription's delivery is stored
//! - `GET    /v1/subscriptions`, `PUT|DELETE /v1/subscriptions/{name}`
//! - `GET    /v1/events?service=&origin=&state=&limit=`: deliveries triggers made (with
//!   `state=dead`, every dead invocation: the dead-letter queue)

use super::api::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use skiff_control::documents::{InvocationInfo, TriggerWrite};
use skiff_control::triggers::{TriggerAnswer, TriggerCommand, MAX_EVENT_BYTES};
use skiff_control::ControlError;
use skiff_core::{ApiAction, Grant, ScheduleSpec, SubscriptionSpec};

pub(super) fn route_table() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/v1/schedules", get(list_schedules)),
        (
            "/v1/schedules/{name}",
            get(describe_schedule)
                .put(put_schedule)
                .delete(remove_schedule),
        ),
        ("/v1/topics", get(list_topics)),
        (
            "/v1/topics/{name}",
            axum::routing::put(create_topic).delete(remove_topic),
        ),
        ("/v1/topics/{name}/events", post(publish)),
        ("/v1/subscriptions", get(list_subscriptions)),
        (
            "/v1/subscriptions/{name}",
            axum::routing::put(put_subscription).delete(remove_subscription),
        ),
        ("/v1/events", get(list_events)),
    ]
}

async fn run(s: &AppState, command: TriggerCommand) -> Result<Response, ApiError> {
    Ok(match s.ctl.execute_trigger(command).await? {
        TriggerAnswer::Schedules(list) => Json(list).into_response(),
        TriggerAnswer::Schedule(one) => Json(one).into_response(),
        TriggerAnswer::Topics(list) => Json(list).into_response(),
        TriggerAnswer::Topic(one) => Json(one).into_response(),
        TriggerAnswer::Subscriptions(list) => Json(list).into_response(),
        TriggerAnswer::Subscription(one) => Json(one).into_response(),
        TriggerAnswer::Removed(name) => {
            Json(serde_json::json!({ "removed": name })).into_response()
        }
    })
}

#[derive(serde::Deserialize)]
struct PutQuery {
    #[serde(default)]
    create: bool,
}

/// Over TCP, a trigger may only deliver to a service the token covers.
fn covers(grant: &Option<axum::Extension<Grant>>, service: &str) -> Result<(), ApiError> {
    match grant {
        Some(axum::Extension(g)) if !g.allows(ApiAction::Deploy, Some(service)) => {
            Err(ControlError::Forbidden(format!(
                "this token may not send events to service {service}"
            ))
            .into())
        }
        _ => Ok(()),
    }
}

async fn list_schedules(State(s): State<AppState>) -> Result<Response, ApiError> {
    run(&s, TriggerCommand::ListSchedules).await
}

async fn describe_schedule(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    run(&s, TriggerCommand::DescribeSchedule { name }).await
}

async fn put_schedule(
    State(s): State<AppState>,
    Path(name): Path<String>,
    grant: Option<axum::Extension<Grant>>,
    q: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<TriggerWrite<ScheduleSpec>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let Json(write) = body?;
    covers(&grant, &write.spec.to)?;
    let command = TriggerCommand::PutSchedule {
        name,
        spec: write.spec,
        create_only: q.create,
    };
    run(&s, command).await
}

async fn remove_schedule(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    run(&s, TriggerCommand::RemoveSchedule { name }).await
}

async fn list_topics(State(s): State<AppState>) -> Result<Response, ApiError> {
    run(&s, TriggerCommand::ListTopics).await
}

async fn create_topic(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    run(&s, TriggerCommand::CreateTopic { name }).await
}

async fn remove_topic(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    run(&s, TriggerCommand::RemoveTopic { name }).await
}

async fn list_subscriptions(State(s): State<AppState>) -> Result<Response, ApiError> {
    run(&s, TriggerCommand::ListSubscriptions).await
}

async fn put_subscription(
    State(s): State<AppState>,
    Path(name): Path<String>,
    grant: Option<axum::Extension<Grant>>,
    q: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<TriggerWrite<SubscriptionSpec>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let Json(write) = body?;
    covers(&grant, &write.spec.to)?;
    let command = TriggerCommand::PutSubscription {
        name,
        spec: write.spec,
        create_only: q.create,
    };
    run(&s, command).await
}

async fn remove_subscription(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    run(&s, TriggerCommand::RemoveSubscription { name }).await
}

/// A CloudEvent in either mode; 202 with the deliveries it made.
async fn publish(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(ControlError::TooLarge(format!(
            "the event's body holds {} bytes: a topic takes at most {MAX_EVENT_BYTES}",
            body.len()
        ))
        .into());
    }
    let event = skiff_events::read_event(&headers, body.to_vec())
        .map_err(|e| ApiError::from(ControlError::invalid_request(e.to_string())))?;
    let published = s.ctl.publish(&topic, event).await?;
    Ok((StatusCode::ACCEPTED, Json(published)).into_response())
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    service: Option<String>,
    origin: Option<String>,
    state: Option<String>,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

async fn list_events(
    State(s): State<AppState>,
    grant: Option<axum::Extension<Grant>>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let ctl = std::sync::Arc::clone(&s.ctl);
    let records = tokio::task::spawn_blocking(move || {
        ctl.events(q.service, q.origin, q.state.as_deref(), q.limit)
    })
    .await
    .map_err(|e| ApiError::from(ControlError::internal(e.to_string())))??;
    // Over TCP, only what goes to services the token may read.
    let infos: Vec<InvocationInfo> = records
        .iter()
        .filter(|r| {
            grant
                .as_ref()
                .is_none_or(|g| g.0.allows(ApiAction::Read, Some(&r.service)))
        })
        .map(InvocationInfo::from)
        .collect();
    Ok(Json(infos).into_response())
}
