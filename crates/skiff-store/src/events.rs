//! Event triggers' rows: schedules (with when each last ran, so a restart catches up at
//! most once), topics, and topics' subscriptions. Specs are kept as JSON and parsed here,
//! once; a row that does not parse is reported as corrupt by name.

use crate::{Store, StoreError};
use rusqlite::{params, OptionalExtension};
use skiff_core::{ScheduleSpec, SubscriptionSpec};

/// A stored schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub name: String,
    pub spec: ScheduleSpec,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// The scheduled time of the last run made (Unix milliseconds).
    pub last_run_ms: Option<i64>,
}

/// A stored topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicRecord {
    pub name: String,
    pub created_ms: i64,
}

/// A stored subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub name: String,
    pub spec: SubscriptionSpec,
    pub created_ms: i64,
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    name: &str,
    json: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|_| StoreError::Corrupt {
        what,
        value: name.to_owned(),
    })
}

fn json<T: serde::Serialize>(spec: &T) -> String {
    serde_json::to_string(spec).expect("a spec is plain data")
}

impl Store {
    /// Stores schedule `name`: made, or (unless `create_only`) replaced, keeping when it
    /// last ran. Whether it was written.
    pub fn put_schedule(
        &mut self,
        name: &str,
        spec: &ScheduleSpec,
        now_ms: i64,
        create_only: bool,
    ) -> Result<bool, StoreError> {
        let sql = if create_only {
            "INSERT INTO schedules (name, spec_json, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING"
        } else {
            "INSERT INTO schedules (name, spec_json, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET spec_json = ?2"
        };
        Ok(self.conn.execute(sql, params![name, json(spec), now_ms])? > 0)
    }

    /// Every schedule, by name.
    pub fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, spec_json, created_ms, last_run_ms FROM schedules ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, spec, created_ms, last_run_ms) = row?;
            out.push(ScheduleRecord {
                spec: parse("schedule's spec", &name, &spec)?,
                name,
                created_ms,
                last_run_ms,
            });
        }
        Ok(out)
    }

    /// Schedule `name`.
    pub fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        Ok(self.schedules()?.into_iter().find(|s| s.name == name))
    }

    /// Notes that `name` ran for its time `at_ms` (a later time only: runs may be
    /// written out of order).
    pub fn set_schedule_run(&mut self, name: &str, at_ms: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE schedules SET last_run_ms = max(coalesce(last_run_ms, ?2), ?2)
             WHERE name = ?1",
            params![name, at_ms],
        )?;
        Ok(())
    }

    /// Removes schedule `name`; whether it was there.
    pub fn delete_schedule(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM schedules WHERE name = ?1", [name])?
            > 0)
    }

    /// Makes topic `name`; whether it is new.
    pub fn put_topic(&mut self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "INSERT INTO topics (name, created_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![name, now_ms],
        )? > 0)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Result<Vec<TopicRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, created_ms FROM topics ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(TopicRecord {
                name: r.get(0)?,
                created_ms: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether topic `name` exists.
    pub fn topic_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM topics WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Removes topic `name` with its subscriptions; whether it was there.
    pub fn delete_topic(&mut self, name: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM subscriptions WHERE topic = ?1", [name])?;
        let gone = tx.execute("DELETE FROM topics WHERE name = ?1", [name])? > 0;
        tx.commit()?;
        Ok(gone)
    }

    /// Stores subscription `name`: made, or (unless `create_only`) replaced. Whether it
    /// was written.
    pub fn put_subscription(
        &mut self,
        name: &str,
        spec: &SubscriptionSpec,
        now_ms: i64,
        create_only: bool,
    ) -> Result<bool, StoreError> {
        let sql = if create_only {
            "INSERT INTO subscriptions (name, topic, spec_json, created_ms)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING"
        } else {
            "INSERT INTO subscriptions (name, topic, spec_json, created_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET topic = ?2, spec_json = ?3"
        };
        Ok(self
            .conn
            .execute(sql, params![name, spec.topic, json(spec), now_ms])?
            > 0)
    }

    /// Every subscription, by name.
    pub fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, spec_json, created_ms FROM subscriptions ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, spec, created_ms) = row?;
            out.push(SubscriptionRecord {
                spec: parse("subscription's spec", &name, &spec)?,
                name,
                created_ms,
            });
        }
        Ok(out)
    }

    /// Removes subscription `name`; whether it was there.
    pub fn delete_subscription(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM subscriptions WHERE name = ?1", [name])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_core::{Delivery, EventFormat, Filter, FilterOp};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        (dir, s)
    }

    fn schedule(cron: &str) -> ScheduleSpec {
        ScheduleSpec {
            cron: cron.into(),
            timezone: "Europe/Paris".into(),
            to: "hello".into(),
            path: "/tick".into(),
            data: Some("{}".into()),
            content_type: Some("application/json".into()),
            format: EventFormat::Binary,
            delivery: Delivery::default(),
        }
    }

    #[test]
    fn schedules_keep_their_last_run_through_a_replacement() {
        let (_d, mut s) = store();
        assert!(s
            .put_schedule("tick", &schedule("* * * * *"), 5, true)
            .unwrap());
        assert!(!s
            .put_schedule("tick", &schedule("*/5 * * * *"), 6, true)
            .unwrap());
        s.set_schedule_run("tick", 1000).unwrap();
        s.set_schedule_run("tick", 900).unwrap();
        assert!(s
            .put_schedule("tick", &schedule("*/5 * * * *"), 7, false)
            .unwrap());
        let got = s.schedule("tick").unwrap().unwrap();
        assert_eq!(got.spec.cron, "*/5 * * * *");
        assert_eq!((got.created_ms, got.last_run_ms), (5, Some(1000)));
        assert!(s.delete_schedule("tick").unwrap());
        assert!(!s.delete_schedule("tick").unwrap());
        assert!(s.schedules().unwrap().is_empty());
    }

    #[test]
    fn a_topic_goes_with_its_subscriptions_and_a_corrupt_spec_is_named() {
        let (_d, mut s) = store();
        assert!(s.put_topic("orders", 1).unwrap());
        assert!(!s.put_topic("orders", 2).unwrap());
        let spec = SubscriptionSpec {
            topic: "orders".into(),
            to: "billing".into(),
            path: "/".into(),
            filters: vec![Filter {
                attribute: "type".into(),
                op: FilterOp::Prefix,
                value: "com.".into(),
            }],
            format: EventFormat::Structured,
            delivery: Delivery::default(),
        };
        assert!(s
            .put_subscription("billing-orders", &spec, 3, true)
            .unwrap());
        assert_eq!(s.subscriptions().unwrap()[0].spec, spec);
        assert!(s.delete_topic("orders").unwrap());
        assert!(s.subscriptions().unwrap().is_empty());
        assert!(!s.topic_exists("orders").unwrap());
        // A row that does not parse is named, not skipped.
        s.put_topic("t", 1).unwrap();
        s.conn
            .execute(
                "INSERT INTO subscriptions VALUES ('broken', 't', '{', 1)",
                [],
            )
            .unwrap();
        let err = s.subscriptions().unwrap_err().to_string();
        assert!(err.contains("broken"), "{err}");
    }
}
