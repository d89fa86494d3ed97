//! Event triggers: the sources of events beside async requests (schedules, topics and
//! their subscriptions), made, listed and removed through typed [`TriggerCommand`]s.
//!
//! Every source does the same two things, so a new one is a small piece: it makes
//! CloudEvents ([`Outbound`]: an event for one service, on a path, in a format) and
//! hands them to the [`Emitter`](crate::invocations::Emitter), which stores them under
//! one commit before anyone is told they were taken; from there the dispatcher delivers
//! them as it delivers async requests (policy, retries, dead letters, at least once).
//! This module must not deliver or speak SQL.

mod schedules;
mod topics;

use crate::documents::{InvocationCounts, ScheduleDetail, SubscriptionDetail, TopicDetail};
use crate::invocations::fields;
use crate::{Control, ControlError};
use skiff_core::{validate_label_name, EventFormat, ScheduleSpec, SubscriptionSpec};
use skiff_events::{CloudEvent, Mode};
use skiff_store::NewInvocation;

pub use schedules::PING_TYPE;
pub(crate) use schedules::{start as start_scheduler, Scheduler};
pub(crate) use topics::Topics;
pub use topics::MAX_EVENT_BYTES;

/// What is asked of triggers.
#[derive(Debug)]
pub enum TriggerCommand {
    ListSchedules,
    DescribeSchedule {
        name: String,
    },
    PutSchedule {
        name: String,
        spec: ScheduleSpec,
        create_only: bool,
    },
    RemoveSchedule {
        name: String,
    },
    ListTopics,
    CreateTopic {
        name: String,
    },
    RemoveTopic {
        name: String,
    },
    ListSubscriptions,
    PutSubscription {
        name: String,
        spec: SubscriptionSpec,
        create_only: bool,
    },
    RemoveSubscription {
        name: String,
    },
}

/// What a trigger command answers.
#[derive(Debug)]
pub enum TriggerAnswer {
    Schedules(Vec<ScheduleDetail>),
    Schedule(ScheduleDetail),
    Topics(Vec<TopicDetail>),
    Topic(TopicDetail),
    Subscriptions(Vec<SubscriptionDetail>),
    Subscription(SubscriptionDetail),
    Removed(String),
}

/// The origin a schedule's invocations carry.
pub(crate) fn schedule_origin(name: &str) -> String {
    format!("schedule/{name}")
}

/// The origin a subscription's invocations carry.
pub(crate) fn subscription_origin(name: &str) -> String {
    format!("subscription/{name}")
}

/// One event for one service, as a source makes it.
pub(crate) struct Outbound<'a> {
    pub origin: String,
    pub service: &'a str,
    pub path: &'a str,
    pub format: EventFormat,
    pub event: CloudEvent,
    /// Deduplicates: a second with the same key for the same service is the first.
    pub key: String,
    pub id: String,
    pub created_ms: i64,
}

impl Outbound<'_> {
    /// The invocation that delivers it: a POST in binary or structured mode.
    pub(crate) fn invocation(self) -> Result<NewInvocation, ControlError> {
        let mode = match self.format {
            EventFormat::Binary => Mode::Binary,
            EventFormat::Structured => Mode::Structured,
        };
        let out = skiff_events::write_event(self.event, mode)
            .map_err(|e| ControlError::invalid_request(e.to_string()))?;
        let mut fields = fields::host_of(self.service);
        for (name, value) in &out.headers {
            fields::push(&mut fields, name, value);
        }
        Ok(NewInvocation {
            id: self.id,
            service: self.service.to_owned(),
            idempotency_key: Some(self.key),
            method: "POST".into(),
            target: self.path.to_owned(),
            fields,
            body: out.body,
            created_ms: self.created_ms,
            origin: Some(self.origin),
            delivering: false,
        })
    }
}

fn bad_name(kind: &str, name: &str) -> Result<(), ControlError> {
    // A DNS label, as a service's name.
    validate_label_name(kind, name).map_err(|e| ControlError::bad_field("name", e.why))
}

fn spec_error(e: skiff_core::SpecError) -> ControlError {
    ControlError::invalid_spec(e.field, e.why)
}

impl Control {
    /// Carries out a trigger command; writes run one at a time with the other writes.
    pub async fn execute_trigger(
        &self,
        command: TriggerCommand,
    ) -> Result<TriggerAnswer, ControlError> {
        use TriggerCommand as C;
        let _serial = match command {
            C::ListSchedules
            | C::DescribeSchedule { .. }
            | C::ListTopics
            | C::ListSubscriptions => None,
            _ => Some(self.write_lock.lock().await),
        };
        match command {
            C::ListSchedules => Ok(TriggerAnswer::Schedules(self.schedule_details(None)?)),
            C::DescribeSchedule { name } => {
                self.schedule_detail(&name).map(TriggerAnswer::Schedule)
            }
            C::PutSchedule {
                name,
                spec,
                create_only,
            } => {
                self.put_schedule(&name, &spec, create_only)?;
                self.scheduler.reload();
                self.schedule_detail(&name).map(TriggerAnswer::Schedule)
            }
            C::RemoveSchedule { name } => {
                if !self.db().delete_schedule(&name)? {
                    return Err(no_such("schedule", &name));
                }
                self.forget_delivery_policy(&schedule_origin(&name));
                self.scheduler.reload();
                tracing::info!(schedule = %name, "schedule removed");
                Ok(TriggerAnswer::Removed(name))
            }
            C::ListTopics => Ok(TriggerAnswer::Topics(self.topic_details()?)),
            C::CreateTopic { name } => {
                bad_name("topic", &name)?;
                if !self.db().put_topic(&name, crate::invocations::now_ms())? {
                    return Err(ControlError::Conflict(format!(
                        "topic {name} exists already"
                    )));
                }
                self.topics.reload(&self.db(), &self.router)?;
                tracing::info!(topic = %name, "topic made");
                let detail = self.topic_details()?.into_iter().find(|t| t.name == name);
                detail
                    .map(TriggerAnswer::Topic)
                    .ok_or_else(|| no_such("topic", &name))
            }
            C::RemoveTopic { name } => {
                let gone: Vec<String> = self
                    .db()
                    .subscriptions()?
                    .into_iter()
                    .filter(|s| s.spec.topic == name)
                    .map(|s| s.name)
                    .collect();
                if !self.db().delete_topic(&name)? {
                    return Err(no_such("topic", &name));
                }
                for subscription in &gone {
                    self.forget_delivery_policy(&subscription_origin(subscription));
                }
                self.topics.reload(&self.db(), &self.router)?;
                tracing::info!(topic = %name, "topic removed with its subscriptions");
                Ok(TriggerAnswer::Removed(name))
            }
            C::ListSubscriptions => Ok(TriggerAnswer::Subscriptions(
                self.subscription_details(None)?,
            )),
            C::PutSubscription {
                name,
                spec,
                create_only,
            } => {
                self.put_subscription(&name, &spec, create_only)?;
                self.subscription_details(Some(&name))?
                    .pop()
                    .map(TriggerAnswer::Subscription)
                    .ok_or_else(|| no_such("subscription", &name))
            }
            C::RemoveSubscription { name } => {
                if !self.db().delete_subscription(&name)? {
                    return Err(no_such("subscription", &name));
                }
                self.topics.reload(&self.db(), &self.router)?;
                self.forget_delivery_policy(&subscription_origin(&name));
                tracing::info!(subscription = %name, "subscription removed");
                Ok(TriggerAnswer::Removed(name))
            }
        }
    }

    fn put_schedule(
        &self,
        name: &str,
        spec: &ScheduleSpec,
        create_only: bool,
    ) -> Result<(), ControlError> {
        bad_name("schedule", name)?;
        spec.validate().map_err(spec_error)?;
        skiff_events::Schedule::parse(&spec.cron, &spec.timezone).map_err(|e| {
            let field = match e {
                skiff_events::ScheduleError::Zone(_) => "timezone",
                _ => "cron",
            };
            ControlError::invalid_spec(field, e.to_string())
        })?;
        self.require_service(&spec.to)?;
        self.require_dead_letter(&spec.delivery)?;
        let now = crate::invocations::now_ms();
        if !self.db().put_schedule(name, spec, now, create_only)? {
            return Err(ControlError::Conflict(format!(
                "schedule {name} exists already: update it instead"
            )));
        }
        self.set_delivery_policy(&schedule_origin(name), &spec.delivery);
        tracing::info!(schedule = %name, cron = %spec.cron, zone = %spec.timezone, to = %spec.to, "schedule written");
        Ok(())
    }

    fn put_subscription(
        &self,
        name: &str,
        spec: &SubscriptionSpec,
        create_only: bool,
    ) -> Result<(), ControlError> {
        bad_name("subscription", name)?;
        spec.validate().map_err(spec_error)?;
        if !self.db().topic_exists(&spec.topic)? {
            return Err(no_such("topic", &spec.topic));
        }
        self.require_service(&spec.to)?;
        self.require_dead_letter(&spec.delivery)?;
        let now = crate::invocations::now_ms();
        if !self.db().put_subscription(name, spec, now, create_only)? {
            return Err(ControlError::Conflict(format!(
                "subscription {name} exists already: update it instead"
            )));
        }
        self.set_delivery_policy(&subscription_origin(name), &spec.delivery);
        self.topics.reload(&self.db(), &self.router)?;
        tracing::info!(subscription = %name, topic = %spec.topic, to = %spec.to, "subscription written");
        Ok(())
    }

    pub(crate) fn require_dead_letter(
        &self,
        delivery: &skiff_core::Delivery,
    ) -> Result<(), ControlError> {
        match delivery.dead_letter_sink() {
            Some((service, _)) => self.require_service(service).map_err(|_| {
                ControlError::invalid_spec(
                    "dead-letter",
                    format!("no such service: {service} (the dead-letter sink)"),
                )
            }),
            None => Ok(()),
        }
    }

    fn require_service(&self, service: &str) -> Result<(), ControlError> {
        match self.db().service(service)? {
            Some(_) => Ok(()),
            None => Err(ControlError::no_service(service)),
        }
    }

    fn counts(&self, origin: &str) -> Result<Option<InvocationCounts>, ControlError> {
        let (counts, oldest) = self.db().origin_counts(origin)?;
        Ok(crate::invocations::counts_document(counts, oldest))
    }

    /// Schedule `name` with its next run and its deliveries' counts.
    fn schedule_detail(&self, name: &str) -> Result<ScheduleDetail, ControlError> {
        self.schedule_details(Some(name))?
            .pop()
            .ok_or_else(|| no_such("schedule", name))
    }

    /// Every schedule (or only the one named) with its next run and deliveries' counts.
    fn schedule_details(&self, only: Option<&str>) -> Result<Vec<ScheduleDetail>, ControlError> {
        let records = self.db().schedules()?;
        records
            .into_iter()
            .filter(|r| only.is_none_or(|name| r.name == name))
            .map(|r| {
                Ok(ScheduleDetail {
                    next_run_ms: self.scheduler.next_run(&r.name),
                    deliveries: self.counts(&schedule_origin(&r.name))?,
                    name: r.name,
                    spec: r.spec,
                    created_ms: r.created_ms,
                    last_run_ms: r.last_run_ms,
                })
            })
            .collect()
    }

    fn topic_details(&self) -> Result<Vec<TopicDetail>, ControlError> {
        let db = self.db();
        let subscriptions = db.subscriptions()?;
        Ok(db
            .topics()?
            .into_iter()
            .map(|t| TopicDetail {
                subscriptions: subscriptions
                    .iter()
                    .filter(|s| s.spec.topic == t.name)
                    .map(|s| s.name.clone())
                    .collect(),
                name: t.name,
                created_ms: t.created_ms,
            })
            .collect())
    }

    /// Every subscription (or only the one named) with its deliveries' counts.
    fn subscription_details(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<SubscriptionDetail>, ControlError> {
        let records = self.db().subscriptions()?;
        records
            .into_iter()
            .filter(|r| only.is_none_or(|name| r.name == name))
            .map(|r| {
                Ok(SubscriptionDetail {
                    deliveries: self.counts(&subscription_origin(&r.name))?,
                    name: r.name,
                    spec: r.spec,
                    created_ms: r.created_ms,
                })
            })
            .collect()
    }

    /// The schedules and subscriptions that deliver to `service`.
    pub(crate) fn triggers_of(
        &self,
        service: &str,
    ) -> Result<crate::documents::ServiceTriggers, ControlError> {
        let db = self.db();
        Ok(crate::documents::ServiceTriggers {
            schedules: db
                .schedules()?
                .into_iter()
                .filter(|s| s.spec.to == service)
                .map(|s| s.name)
                .collect(),
            subscriptions: db
                .subscriptions()?
                .into_iter()
                .filter(|s| s.spec.to == service)
                .map(|s| s.name)
                .collect(),
        })
    }

    /// Loads what triggers there are and sets their delivery policies (at start).
    pub(crate) fn load_triggers(&self) -> Result<(), ControlError> {
        let db = self.db();
        for s in db.schedules()? {
            self.set_delivery_policy(&schedule_origin(&s.name), &s.spec.delivery);
        }
        for s in db.subscriptions()? {
            self.set_delivery_policy(&subscription_origin(&s.name), &s.spec.delivery);
        }
        self.topics.reload(&db, &self.router)
    }
}

fn no_such(kind: &str, name: &str) -> ControlError {
    ControlError::NotFound(format!("no such {kind}: {name}"))
}
