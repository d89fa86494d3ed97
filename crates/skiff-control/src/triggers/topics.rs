//! Topics: an event published to a topic becomes one delivery per subscription whose
//! filters it passes, all stored under one commit before the publisher hears back.
//! Subscriptions are kept in memory (reloaded on every change to them), so publishing
//! reads no table. An event published twice (the same `source` and `id`, which
//! CloudEvents says name one event) makes no second delivery.

use super::{subscription_origin, Outbound};
use crate::documents::{Published, PublishedDelivery};
use crate::{Control, ControlError};
use skiff_core::SubscriptionSpec;
use skiff_events::{AttributesReader, CloudEvent};
use skiff_store::Store;
use std::collections::HashMap;
use std::sync::RwLock;

/// The largest event a topic takes (its data and attributes as sent).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Each topic's subscriptions, by topic.
#[derive(Default)]
pub(crate) struct Topics {
    subscriptions: RwLock<HashMap<String, Vec<(String, SubscriptionSpec)>>>,
}

impl Topics {
    /// Reads every subscription again from `store`.
    pub(crate) fn reload(
        &self,
        store: &Store,
        router: &skiff_router::Router,
    ) -> Result<(), ControlError> {
        let mut by_topic: HashMap<String, Vec<(String, SubscriptionSpec)>> = HashMap::new();
        for topic in store.topics()? {
            by_topic.entry(topic.name).or_default();
        }
        for s in store.subscriptions()? {
            by_topic
                .entry(s.spec.topic.clone())
                .or_default()
                .push((s.name, s.spec));
        }
        router.set_topics(by_topic.keys().cloned());
        *self
            .subscriptions
            .write()
            .unwrap_or_else(|p| p.into_inner()) = by_topic;
        Ok(())
    }

    /// The subscriptions of `topic` that `event` passes; `None` when there is no topic.
    fn matching(&self, topic: &str, event: &CloudEvent) -> Option<Vec<(String, SubscriptionSpec)>> {
        let all = self.subscriptions.read().unwrap_or_else(|p| p.into_inner());
        let subscriptions = all.get(topic)?;
        let attributes = attributes(event);
        Some(
            subscriptions
                .iter()
                .filter(|(_, spec)| spec.matches(|name| attributes.get(name).map(String::as_str)))
                .cloned()
                .collect(),
        )
    }
}

/// An event's context attributes and extensions as text, by name.
fn attributes(event: &CloudEvent) -> HashMap<String, String> {
    event
        .iter()
        .map(|(name, value)| (name.to_owned(), value.to_string()))
        .collect()
}

impl Control {
    /// Publishes `event` to `topic`: one delivery per matching subscription, stored
    /// before this returns.
    pub async fn publish(&self, topic: &str, event: CloudEvent) -> Result<Published, ControlError> {
        let matching = self
            .topics
            .matching(topic, &event)
            .ok_or_else(|| ControlError::NotFound(format!("no such topic: {topic}")))?;
        let emitter = self
            .emitter
            .get()
            .ok_or_else(|| {
                ControlError::internal("events are not taken yet: the daemon is starting")
            })?
            .clone();
        let event_id = event.id().to_owned();
        let key_tail = format!("{}\n{}", event.source(), event_id);
        let now = crate::invocations::now_ms();
        let mut invocations = Vec::with_capacity(matching.len());
        for (name, spec) in &matching {
            invocations.push(
                Outbound {
                    origin: subscription_origin(name),
                    service: &spec.to,
                    path: &spec.path,
                    format: spec.format,
                    event: event.clone(),
                    key: format!("{}\n{key_tail}", subscription_origin(name)),
                    id: crate::invocations::new_id(),
                    created_ms: now,
                }
                .invocation()?,
            );
        }
        let stored = if invocations.is_empty() {
            Vec::new()
        } else {
            emitter
                .emit(invocations)
                .await
                .map_err(ControlError::internal)?
        };
        tracing::debug!(topic, event = %event_id, deliveries = stored.len(), "event published");
        Ok(Published {
            topic: topic.to_owned(),
            id: event_id,
            deliveries: matching
                .into_iter()
                .zip(stored)
                .map(
                    |((subscription, spec), (invocation, duplicate))| PublishedDelivery {
                        subscription,
                        service: spec.to,
                        invocation,
                        duplicate,
                    },
                )
                .collect(),
        })
    }
}
