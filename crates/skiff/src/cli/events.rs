//! Event triggers on the command line: `skiff schedule` (cron to a service, as Cloud
//! Scheduler and Knative's PingSource), `skiff topic` with its subscriptions (as
//! Knative's Broker and Trigger), `skiff publish`, and `skiff events` (what triggers
//! delivered, and the dead-letter queue).

use super::client::Client;
use super::delivery::DeliveryArgs;
use super::output::{self, Format};
use clap::{Args, Subcommand};
use hyper::Method;
use skiff_control::documents::{
    InvocationCounts, InvocationInfo, Published, ScheduleDetail, SubscriptionDetail, TopicDetail,
    TriggerWrite,
};
use skiff_core::{EventFormat, Filter, FilterOp, ScheduleSpec, SubscriptionSpec};

#[derive(Args)]
pub struct ScheduleArgs {
    /// The schedule's name.
    pub name: String,
    /// When: 5 fields (minute hour day month weekday), or 6 with seconds first.
    #[arg(long)]
    pub cron: String,
    /// The IANA time zone the pattern is read in (DST as cron does it).
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// The service it sends to.
    #[arg(long, value_name = "SERVICE")]
    pub to: String,
    /// The path it posts to.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// The event's data.
    #[arg(long)]
    pub data: Option<String>,
    /// The data's media type (default text/plain).
    #[arg(long)]
    pub content_type: Option<String>,
    /// How the event goes out: binary (ce-* fields) or structured (JSON).
    #[arg(long, default_value = "binary")]
    pub format: EventFormat,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Make a schedule.
    Create(ScheduleArgs),
    /// Replace a schedule (its next run counts from now).
    Update(ScheduleArgs),
    /// Show a schedule: its next and last runs, its deliveries.
    Describe { name: String },
    /// List schedules.
    Ls,
    /// Remove a schedule (deliveries already made stay).
    Rm { name: String },
}

#[derive(Args)]
pub struct SubscribeArgs {
    /// The topic.
    pub topic: String,
    /// The service events go to.
    #[arg(long, value_name = "SERVICE")]
    pub to: String,
    /// The subscription's name (default: TOPIC-SERVICE).
    #[arg(long)]
    pub name: Option<String>,
    /// Only events whose attribute equals the value (type, source, subject, an
    /// extension); repeatable, all must hold.
    #[arg(long, value_name = "ATTR=VALUE")]
    pub filter: Vec<String>,
    /// Only events whose attribute starts with the value.
    #[arg(long, value_name = "ATTR=PREFIX")]
    pub filter_prefix: Vec<String>,
    /// Only events whose attribute ends with the value.
    #[arg(long, value_name = "ATTR=SUFFIX")]
    pub filter_suffix: Vec<String>,
    /// The path events are posted to.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// How events go out: binary (ce-* fields) or structured (JSON).
    #[arg(long, default_value = "binary")]
    pub format: EventFormat,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Make a topic.
    Create { name: String },
    /// List topics with their subscriptions.
    Ls,
    /// Remove a topic and its subscriptions.
    Rm { name: String },
    /// Push a topic's events (those that pass the filters) to a service.
    Subscribe(SubscribeArgs),
    /// Replace a subscription (as `subscribe`, with its name).
    Resubscribe(SubscribeArgs),
    /// Remove a subscription.
    Unsubscribe {
        /// The subscription's name.
        name: String,
    },
    /// List subscriptions with their filters and deliveries.
    Subscriptions,
}

#[derive(Args)]
pub struct PublishArgs {
    /// The topic.
    pub topic: String,
    /// The event's type (com.example.order.created).
    #[arg(long = "type")]
    pub ty: String,
    /// The event's source (a URI reference: /shop/eu).
    #[arg(long)]
    pub source: String,
    /// The event's id (default: a new one).
    #[arg(long)]
    pub id: Option<String>,
    /// The event's data.
    #[arg(long)]
    pub data: Option<String>,
    /// The data's media type.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,
    /// Send it in structured mode (JSON) instead of binary (ce-* fields).
    #[arg(long)]
    pub structured: bool,
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// What triggers delivered, newest first.
    Ls(EventsFilter),
    /// The dead-letter queue: deliveries given up on (async invocations too).
    Dlq(EventsFilter),
}

#[derive(Args, Default)]
pub struct EventsFilter {
    /// Only those to this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only those of this trigger (schedule/NAME, subscription/NAME).
    #[arg(long)]
    pub origin: Option<String>,
    /// How many of the newest.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

fn spec_of_schedule(a: &ScheduleArgs) -> ScheduleSpec {
    ScheduleSpec {
        cron: a.cron.clone(),
        timezone: a.timezone.clone(),
        to: a.to.clone(),
        path: a.path.clone(),
        data: a.data.clone(),
        content_type: a.content_type.clone(),
        format: a.format,
        delivery: a.delivery.delivery(),
    }
}

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), skiff_sandbox::rfc3339_ms)
}

fn counts(c: &Option<InvocationCounts>) -> String {
    c.as_ref().map_or_else(
        || "-".into(),
        |c| {
            format!(
                "{} delivered, {} pending, {} dead",
                c.delivered,
                c.pending + c.delivering,
                c.dead
            )
        },
    )
}

fn json_or<T: serde::Serialize>(
    format: Format,
    value: &T,
    table: impl FnOnce(),
) -> anyhow::Result<()> {
    match format {
        Format::Json => output::json(&serde_json::to_value(value)?),
        Format::Table => table(),
    }
    Ok(())
}

fn schedules_table(list: &[ScheduleDetail]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.spec.cron.clone(),
                s.spec.timezone.clone(),
                format!("{}{}", s.spec.to, s.spec.path),
                when(s.next_run_ms),
                when(s.last_run_ms),
                counts(&s.deliveries),
            ]
        })
        .collect();
    output::table(
        &["NAME", "CRON", "ZONE", "TO", "NEXT", "LAST", "DELIVERIES"],
        &rows,
    );
}

pub fn schedule(client: &Client, format: Format, command: ScheduleCommand) -> anyhow::Result<()> {
    let put = |a: &ScheduleArgs, create: bool| -> anyhow::Result<ScheduleDetail> {
        let body = serde_json::to_value(TriggerWrite {
            spec: spec_of_schedule(a),
        })?;
        let query = if create { "?create=true" } else { "" };
        client.call(
            Method::PUT,
            &format!("/v1/schedules/{}{query}", a.name),
            Some(body),
        )
    };
    let one = |d: ScheduleDetail| json_or(format, &d, || schedules_table(std::slice::from_ref(&d)));
    match command {
        ScheduleCommand::Create(a) => one(put(&a, true)?),
        ScheduleCommand::Update(a) => one(put(&a, false)?),
        ScheduleCommand::Describe { name } => {
            one(client.call(Method::GET, &format!("/v1/schedules/{name}"), None)?)
        }
        ScheduleCommand::Ls => {
            let list: Vec<ScheduleDetail> = client.call(Method::GET, "/v1/schedules", None)?;
            json_or(format, &list, || schedules_table(&list))
        }
        ScheduleCommand::Rm { name } => {
            let v: serde_json::Value =
                client.call(Method::DELETE, &format!("/v1/schedules/{name}"), None)?;
            json_or(format, &v, || println!("removed schedule {name}"))
        }
    }
}

fn filters(a: &SubscribeArgs) -> anyhow::Result<Vec<Filter>> {
    let mut all = Vec::new();
    for (op, texts) in [
        (FilterOp::Exact, &a.filter),
        (FilterOp::Prefix, &a.filter_prefix),
        (FilterOp::Suffix, &a.filter_suffix),
    ] {
        for text in texts {
            all.push(Filter::parse(op, text).map_err(anyhow::Error::msg)?);
        }
    }
    Ok(all)
}

fn filters_text(filters: &[Filter]) -> String {
    if filters.is_empty() {
        return "(every event)".into();
    }
    filters
        .iter()
        .map(|f| {
            let op = match f.op {
                FilterOp::Exact => "=",
                FilterOp::Prefix => " starts with ",
                FilterOp::Suffix => " ends with ",
            };
            format!("{}{op}{}", f.attribute, f.value)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn subscriptions_table(list: &[SubscriptionDetail]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.spec.topic.clone(),
                format!("{}{}", s.spec.to, s.spec.path),
                filters_text(&s.spec.filters),
                counts(&s.deliveries),
            ]
        })
        .collect();
    output::table(&["NAME", "TOPIC", "TO", "FILTERS", "DELIVERIES"], &rows);
}

pub fn topic(client: &Client, format: Format, command: TopicCommand) -> anyhow::Result<()> {
    let subscribe = |a: SubscribeArgs, create: bool| -> anyhow::Result<()> {
        let name = a
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", a.topic, a.to));
        let spec = SubscriptionSpec {
            topic: a.topic.clone(),
            to: a.to.clone(),
            path: a.path.clone(),
            filters: filters(&a)?,
            format: a.format,
            delivery: a.delivery.delivery(),
        };
        let query = if create { "?create=true" } else { "" };
        let d: SubscriptionDetail = client.call(
            Method::PUT,
            &format!("/v1/subscriptions/{name}{query}"),
            Some(serde_json::to_value(TriggerWrite { spec })?),
        )?;
        json_or(format, &d, || subscriptions_table(std::slice::from_ref(&d)))
    };
    match command {
        TopicCommand::Create { name } => {
            let d: TopicDetail = client.call(Method::PUT, &format!("/v1/topics/{name}"), None)?;
            json_or(format, &d, || println!("made topic {name}"))
        }
        TopicCommand::Ls => {
            let list: Vec<TopicDetail> = client.call(Method::GET, "/v1/topics", None)?;
            json_or(format, &list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| vec![t.name.clone(), t.subscriptions.join(", ")])
                    .collect();
                output::table(&["NAME", "SUBSCRIPTIONS"], &rows);
            })
        }
        TopicCommand::Rm { name } => {
            let v: serde_json::Value =
                client.call(Method::DELETE, &format!("/v1/topics/{name}"), None)?;
            json_or(format, &v, || {
                println!("removed topic {name} and its subscriptions")
            })
        }
        TopicCommand::Subscribe(a) => subscribe(a, true),
        TopicCommand::Resubscribe(a) => subscribe(a, false),
        TopicCommand::Unsubscribe { name } => {
            let v: serde_json::Value =
                client.call(Method::DELETE, &format!("/v1/subscriptions/{name}"), None)?;
            json_or(format, &v, || println!("removed subscription {name}"))
        }
        TopicCommand::Subscriptions => {
            let list: Vec<SubscriptionDetail> =
                client.call(Method::GET, "/v1/subscriptions", None)?;
            json_or(format, &list, || subscriptions_table(&list))
        }
    }
}

pub fn publish(client: &Client, format: Format, a: PublishArgs) -> anyhow::Result<()> {
    let id = a.id.clone().unwrap_or_else(|| crate::launch::random_id(""));
    let data = a
        .data
        .as_ref()
        .map(|d| (a.content_type.as_str(), d.clone().into_bytes()));
    let event = skiff_events::originate(&id, &a.source, &a.ty, std::time::SystemTime::now(), data)?;
    let mode = if a.structured {
        skiff_events::Mode::Structured
    } else {
        skiff_events::Mode::Binary
    };
    let out = skiff_events::write_event(event, mode)?;
    let published: Published = client.post_raw(
        &format!("/v1/topics/{}/events", a.topic),
        &out.headers,
        out.body,
    )?;
    json_or(format, &published, || {
        println!(
            "published {} to {}: {} deliver{}",
            published.id,
            published.topic,
            published.deliveries.len(),
            if published.deliveries.len() == 1 {
                "y"
            } else {
                "ies"
            }
        );
        for d in &published.deliveries {
            let again = if d.duplicate {
                " (published before)"
            } else {
                ""
            };
            println!(
                "  {} → {} as {}{again}",
                d.subscription, d.service, d.invocation
            );
        }
    })
}

pub fn events(client: &Client, format: Format, command: EventsCommand) -> anyhow::Result<()> {
    let (f, dead) = match command {
        EventsCommand::Ls(f) => (f, false),
        EventsCommand::Dlq(f) => (f, true),
    };
    let mut query = format!("/v1/events?limit={}", f.limit);
    if dead {
        query.push_str("&state=dead");
    }
    for (key, value) in [("service", &f.service), ("origin", &f.origin)] {
        if let Some(v) = value {
            query.push_str(&format!("&{key}={}", urlencode(v)));
        }
    }
    let list: Vec<InvocationInfo> = client.call(Method::GET, &query, None)?;
    json_or(format, &list, || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|i| {
                let last = super::invocations::last_outcome(i);
                vec![
                    i.id.clone(),
                    i.state.to_uppercase(),
                    i.origin.clone().unwrap_or_else(|| "async request".into()),
                    i.event_type.clone().unwrap_or_default(),
                    format!("{}{}", i.service, i.target),
                    i.attempts.to_string(),
                    when(Some(i.created_ms)),
                    last,
                ]
            })
            .collect();
        output::table(
            &[
                "ID", "STATE", "ORIGIN", "TYPE", "TO", "ATTEMPTS", "CREATED", "LAST",
            ],
            &rows,
        );
    })
}

/// `/` is kept: origins hold one.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
