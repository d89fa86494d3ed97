//! Service and revision rows. A deploy adds a revision (generation n+1) holding the spec
//! and the image digest it resolved to; revisions are never edited afterwards, except for
//! the record of their last start failure. The serving revision is switched separately,
//! once the new one is known to start. Every change to a service bumps its `version`, from
//! one counter shared by all services, so a version names one state of one service ever:
//! a writer holding an old one (or one of a removed service) can be refused.
//!
//! Specs and traffic are stored as JSON, but callers see them typed: they are parsed here,
//! once, and a row that does not parse is reported as corrupt, naming the row.

use crate::{now_unix, Store, StoreError};
use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};
use skiff_core::{Digest, ServiceSpec, TrafficTarget};

/// A stored service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Service name.
    pub name: String,
    /// Its latest revision known to start: where traffic that follows the latest
    /// revision goes.
    pub serving_revision: Option<String>,
    /// Unix time created.
    pub created_at: i64,
    /// Its traffic split and tags; `None`: everything to the serving revision.
    pub traffic: Option<Vec<TrafficTarget>>,
    /// Bumped by every change to the service; unique across services, never reused.
    pub version: u64,
}

/// A service as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLine {
    /// Service name.
    pub name: String,
    /// Its latest revision known to start.
    pub serving_revision: Option<String>,
    /// Its newest revision, started or not (`None` only while its first is being made).
    pub latest_revision: Option<String>,
}

/// Why a revision's instance last failed to start or died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRecord {
    /// Unix time of the failure.
    pub at: i64,
    /// Short reason.
    pub reason: String,
    /// The last lines of the instance's log.
    pub log_tail: String,
}

/// A stored revision.
#[derive(Clone, Debug, PartialEq)]
pub struct RevisionRecord {
    /// Revision name (`SERVICE-00001`).
    pub name: String,
    /// Its service.
    pub service: String,
    /// 1 for the first deploy, then one more for each.
    pub generation: u32,
    /// Image manifest digest it runs.
    pub image_digest: Digest,
    /// The service spec it was deployed with.
    pub spec: ServiceSpec,
    /// Unix time created.
    pub created_at: i64,
    /// Its last start failure, if any.
    pub last_failure: Option<FailureRecord>,
}

/// A JSON or text column that does not parse, as the error rusqlite carries out of a row.
fn corrupt(column: usize, row: &str, what: &str, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("{row}: stored {what}: {e}").into(),
    )
}

const SERVICE_COLUMNS: &str = "name, serving_revision, created_at, traffic_json, version";

fn service_row(r: &Row<'_>) -> rusqlite::Result<ServiceRecord> {
    let name: String = r.get(0)?;
    let traffic_json: Option<String> = r.get(3)?;
    let traffic = match traffic_json {
        Some(json) => Some(
            serde_json::from_str(&json)
                .map_err(|e| corrupt(3, &format!("service {name}"), "traffic", e))?,
        ),
        None => None,
    };
    Ok(ServiceRecord {
        serving_revision: r.get(1)?,
        created_at: r.get(2)?,
        traffic,
        version: r.get::<_, i64>(4)? as u64,
        name,
    })
}

const REVISION_COLUMNS: &str = "name, service, generation, image_digest, spec_json, created_at,
     failure_at, failure_reason, failure_log_tail";

fn revision_row(r: &Row<'_>) -> rusqlite::Result<RevisionRecord> {
    let failure_at: Option<i64> = r.get(6)?;
    let name: String = r.get(0)?;
    let row = format!("revision {name}");
    let digest: String = r.get(3)?;
    let spec: String = r.get(4)?;
    Ok(RevisionRecord {
        service: r.get(1)?,
        generation: r.get(2)?,
        image_digest: digest
            .parse()
            .map_err(|e| corrupt(3, &row, "image digest", e))?,
        spec: serde_json::from_str(&spec).map_err(|e| corrupt(4, &row, "spec", e))?,
        name,
        created_at: r.get(5)?,
        last_failure: match failure_at {
            Some(at) => Some(FailureRecord {
                at,
                reason: r.get(7)?,
                log_tail: r.get(8)?,
            }),
            None => None,
        },
    })
}

impl Store {
    /// Adds the next revision of `service` (creating the service on its first deploy) and
    /// returns it. `name_of` turns (service, generation) into the revision's name.
    pub fn create_revision(
        &mut self,
        service: &str,
        image_digest: &Digest,
        spec: &ServiceSpec,
        name_of: impl Fn(&str, u32) -> String,
    ) -> Result<RevisionRecord, StoreError> {
        let spec_json = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt {
            what: "service spec",
            value: e.to_string(),
        })?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_unix();
        tx.execute(
            "INSERT INTO services (name, created_at) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![service, now],
        )?;
        bump_version(&tx, service)?;
        let last: Option<u32> = tx.query_row(
            "SELECT MAX(generation) FROM revisions WHERE service = ?1",
            [service],
            |r| r.get(0),
        )?;
        let generation = last.unwrap_or(0) + 1;
        let name = name_of(service, generation);
        let owner: Option<String> = tx
            .query_row(
                "SELECT service FROM revisions WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(owner) = owner {
            return Err(StoreError::RevisionNameTaken {
                name,
                service: owner,
            });
        }
        tx.execute(
            "INSERT INTO revisions (name, service, generation, image_digest, spec_json, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                name,
                service,
                generation,
                image_digest.to_string(),
                spec_json,
                now
            ],
        )?;
        tx.commit()?;
        Ok(RevisionRecord {
            name,
            service: service.to_owned(),
            generation,
            image_digest: image_digest.clone(),
            spec: spec.clone(),
            created_at: now,
            last_failure: None,
        })
    }

    /// Points the service's traffic at `revision`.
    pub fn set_serving_revision(
        &mut self,
        service: &str,
        revision: &str,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE services SET serving_revision = ?2 WHERE name = ?1
               AND EXISTS (SELECT 1 FROM revisions WHERE name = ?2 AND service = ?1)",
            params![service, revision],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchService(service.to_owned()));
        }
        bump_version(&tx, service)?;
        tx.commit()?;
        Ok(())
    }

    /// Sets the service's traffic split (`None`: all to the serving revision).
    pub fn set_traffic(
        &mut self,
        service: &str,
        traffic: Option<&[TrafficTarget]>,
    ) -> Result<(), StoreError> {
        let json = match traffic {
            Some(t) => Some(serde_json::to_string(t).map_err(|e| StoreError::Corrupt {
                what: "traffic",
                value: e.to_string(),
            })?),
            None => None,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE services SET traffic_json = ?2 WHERE name = ?1",
            params![service, json],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchService(service.to_owned()));
        }
        bump_version(&tx, service)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes the revisions of `service` past its newest `keep`, except those named in
    /// `protected` (serving or in its traffic). Returns the names deleted.
    pub fn prune_revisions(
        &mut self,
        service: &str,
        keep: usize,
        protected: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT name FROM revisions WHERE service = ?1 ORDER BY generation DESC LIMIT -1 OFFSET ?2",
            )?;
            let rows = stmt.query_map(params![service, keep as i64], |r| r.get(0))?;
            rows.collect::<Result<Vec<String>, _>>()?
        };
        let doomed: Vec<String> = old.into_iter().filter(|n| !protected.contains(n)).collect();
        for name in &doomed {
            tx.execute("DELETE FROM revisions WHERE name = ?1", [name])?;
        }
        tx.commit()?;
        Ok(doomed)
    }

    /// Every service, by name.
    pub fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services ORDER BY name");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map([], service_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One service by name.
    pub fn service(&self, name: &str) -> Result<Option<ServiceRecord>, StoreError> {
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE name = ?1");
        Ok(self.conn.query_row(&sql, [name], service_row).optional()?)
    }

    /// A service's revisions, newest first.
    pub fn revisions(&self, service: &str) -> Result<Vec<RevisionRecord>, StoreError> {
        let sql = format!(
            "SELECT {REVISION_COLUMNS} FROM revisions WHERE service = ?1 ORDER BY generation DESC"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map([service], revision_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Each service with its serving and newest revision, by name: one pass over the
    /// services table (each row keeps its newest revision, migration 15), sorted here
    /// (by the name index, SQLite would look each row up in the table from it).
    pub fn service_lines(&self) -> Result<Vec<ServiceLine>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, serving_revision, latest_revision FROM services")?;
        let mut rows: Vec<ServiceLine> = stmt
            .query_map([], |row| {
                Ok(ServiceLine {
                    name: row.get(0)?,
                    serving_revision: row.get(1)?,
                    latest_revision: row.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        rows.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }

    /// One revision by name.
    pub fn revision(&self, name: &str) -> Result<Option<RevisionRecord>, StoreError> {
        let sql = format!("SELECT {REVISION_COLUMNS} FROM revisions WHERE name = ?1");
        Ok(self.conn.query_row(&sql, [name], revision_row).optional()?)
    }

    /// Records why an instance of `revision` failed to start or died.
    pub fn record_revision_failure(
        &mut self,
        revision: &str,
        reason: &str,
        log_tail: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE revisions SET failure_at = ?2, failure_reason = ?3, failure_log_tail = ?4
             WHERE name = ?1",
            params![revision, now_unix(), reason, log_tail],
        )?;
        Ok(())
    }

    /// Deletes a service and its revisions. Its instance rows stay (their logs outlive
    /// them); the caller stops any that still run.
    pub fn delete_service(&mut self, name: &str) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM services WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(StoreError::NoSuchService(name.to_owned()));
        }
        Ok(())
    }
}

/// Gives `service` the next version from the counter all services share.
fn bump_version(tx: &Transaction<'_>, service: &str) -> Result<(), StoreError> {
    let version: i64 = tx.query_row(
        "UPDATE counters SET value = value + 1 WHERE name = 'service_version' RETURNING value",
        [],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE services SET version = ?2 WHERE name = ?1",
        params![service, version],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewImage, NewInstance};
    use skiff_core::Digest;

    fn store_with_image() -> (tempfile::TempDir, Store, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let digest = Digest::from_sha256_bytes(&[7; 32]);
        store
            .insert_image(
                &NewImage {
                    digest: digest.clone(),
                    config_digest: Digest::from_sha256_bytes(&[8; 32]),
                    config_json: "{}".into(),
                    source: "test".into(),
                    size: 1,
                    layers: vec![],
                },
                &[],
            )
            .unwrap();
        (dir, store, digest)
    }

    fn spec(port: u16) -> ServiceSpec {
        let mut s = ServiceSpec::new("hello");
        s.port = port;
        s
    }

    fn name_of(s: &str, g: u32) -> String {
        format!("{s}-{g:05}")
    }

    #[test]
    fn revisions_count_up_and_serving_switches() {
        let (_d, mut db, img) = store_with_image();
        let r1 = db
            .create_revision("hello", &img, &spec(1), name_of)
            .unwrap();
        let r2 = db
            .create_revision("hello", &img, &spec(2), name_of)
            .unwrap();
        assert_eq!((r1.generation, r2.generation), (1, 2));
        assert_eq!(r2.name, "hello-00002");
        assert_eq!(db.service("hello").unwrap().unwrap().serving_revision, None);
        db.set_serving_revision("hello", &r1.name).unwrap();
        assert_eq!(
            db.service("hello").unwrap().unwrap().serving_revision,
            Some(r1.name.clone())
        );
        let revs = db.revisions("hello").unwrap();
        assert_eq!(revs, vec![r2.clone(), r1.clone()]);
        let other = db
            .create_revision("other", &img, &spec(3), name_of)
            .unwrap();
        let lines = db.service_lines().unwrap();
        let line = |name: &str, serving: Option<&str>, latest: &str| ServiceLine {
            name: name.into(),
            serving_revision: serving.map(Into::into),
            latest_revision: Some(latest.into()),
        };
        assert_eq!(
            lines,
            [
                line("hello", Some(&r1.name), &r2.name),
                line("other", None, &other.name)
            ],
            "by name, each with its newest revision (hello's second, not the one serving)"
        );
        assert!(matches!(
            db.set_serving_revision("nobody", &r1.name),
            Err(StoreError::NoSuchService(_))
        ));
    }

    #[test]
    fn failures_are_recorded_and_services_deleted() {
        let (_d, mut db, img) = store_with_image();
        let r = db
            .create_revision("hello", &img, &spec(1), name_of)
            .unwrap();
        db.record_revision_failure(&r.name, "exited with code 3", "boom\n")
            .unwrap();
        let f = db.revision(&r.name).unwrap().unwrap().last_failure.unwrap();
        assert_eq!(
            (f.reason.as_str(), f.log_tail.as_str()),
            ("exited with code 3", "boom\n")
        );
        // The image is what the revision runs: it may not go while the service exists.
        assert!(matches!(
            db.remove_image(&img.to_string()),
            Err(StoreError::ImageInRevisions { .. })
        ));
        db.delete_service("hello").unwrap();
        assert!(db.revision(&r.name).unwrap().is_none());
        assert!(db.services().unwrap().is_empty());
        assert!(matches!(
            db.delete_service("hello"),
            Err(StoreError::NoSuchService(_))
        ));
        db.remove_image(&img.to_string()).unwrap();
    }

    #[test]
    fn instances_remember_their_service() {
        let (_d, mut db, img) = store_with_image();
        let mut new = NewInstance {
            id: "i1".into(),
            image_digest: img.clone(),
            supervisor_pid: 1,
            supervisor_start: 1,
            log_path: "/l".into(),
            service: Some(("hello".into(), "hello-00001".into())),
        };
        db.create_instance(&new, 0..10).unwrap();
        new.id = "i2".into();
        new.service = None;
        db.create_instance(&new, 0..10).unwrap();
        let of = db.service_instances("hello").unwrap();
        assert_eq!(of.len(), 1);
        assert_eq!(of[0].revision.as_deref(), Some("hello-00001"));
    }

    #[test]
    fn traffic_is_kept_and_old_revisions_pruned_but_protected_ones() {
        let (_d, mut db, img) = store_with_image();
        for _ in 0..5 {
            db.create_revision("p", &img, &spec(1), name_of).unwrap();
        }
        let split = [TrafficTarget::pinned(name_of("p", 1), 100)];
        db.set_traffic("p", Some(&split)).unwrap();
        assert_eq!(
            db.service("p").unwrap().unwrap().traffic.as_deref(),
            Some(&split[..])
        );
        assert!(db.set_traffic("nope", None).is_err());
        let gone = db.prune_revisions("p", 2, &[name_of("p", 1)]).unwrap();
        assert_eq!(gone, [name_of("p", 3), name_of("p", 2)]);
        let left: Vec<u32> = db
            .revisions("p")
            .unwrap()
            .iter()
            .map(|r| r.generation)
            .collect();
        assert_eq!(left, [5, 4, 1]);
        // Generations keep counting past deleted ones.
        let next = db.create_revision("p", &img, &spec(1), name_of).unwrap();
        assert_eq!(next.generation, 6);
    }

    #[test]
    fn a_service_line_names_the_newest_revision_left_whatever_removed_the_others() {
        let (_d, mut db, img) = store_with_image();
        let latest = |db: &Store| {
            let lines = db.service_lines().unwrap();
            assert_eq!(lines.len(), 1, "{lines:?}");
            lines[0].latest_revision.clone()
        };
        for _ in 0..3 {
            db.create_revision("n", &img, &spec(1), name_of).unwrap();
        }
        assert_eq!(latest(&db), Some(name_of("n", 3)));
        // Pruning keeps the newest unless nothing is kept; what is newest then follows.
        db.prune_revisions("n", 0, &[name_of("n", 1)]).unwrap();
        assert_eq!(latest(&db), Some(name_of("n", 1)));
        db.conn
            .execute("DELETE FROM revisions WHERE name = ?1", [name_of("n", 1)])
            .unwrap();
        assert_eq!(
            latest(&db),
            None,
            "a service without revisions has no newest"
        );
        db.create_revision("n", &img, &spec(1), name_of).unwrap();
        assert_eq!(latest(&db), Some(name_of("n", 1)));
    }

    #[test]
    fn versions_change_with_every_write_and_never_come_back() {
        let (_d, mut db, img) = store_with_image();
        let version = |db: &Store| db.service("v").unwrap().unwrap().version;
        let r1 = db.create_revision("v", &img, &spec(1), name_of).unwrap();
        let v1 = version(&db);
        db.set_serving_revision("v", &r1.name).unwrap();
        let v2 = version(&db);
        db.set_traffic("v", None).unwrap();
        let v3 = version(&db);
        assert!(v1 < v2 && v2 < v3, "{v1} {v2} {v3}");
        db.record_revision_failure(&r1.name, "x", "").unwrap();
        assert_eq!(
            version(&db),
            v3,
            "a failure report is not a change of the service"
        );
        db.delete_service("v").unwrap();
        db.create_revision("v", &img, &spec(1), name_of).unwrap();
        assert!(
            version(&db) > v3,
            "a service made anew never has an old version"
        );
    }

    #[test]
    fn a_taken_revision_name_is_refused_and_nothing_is_written() {
        let (_d, mut db, img) = store_with_image();
        db.create_revision("web", &img, &spec(1), |_, _| "web-x-00001".into())
            .unwrap();
        let err = db
            .create_revision("web-x", &img, &spec(1), name_of)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "revision name web-x-00001 is taken by a revision of service web"
        );
        assert!(
            db.service("web-x").unwrap().is_none(),
            "no half-made service"
        );
    }

    #[test]
    fn a_corrupt_spec_is_reported_with_its_revision() {
        let (_d, mut db, img) = store_with_image();
        let r = db.create_revision("c", &img, &spec(1), name_of).unwrap();
        db.conn
            .execute(
                "UPDATE revisions SET spec_json = '{nope' WHERE name = ?1",
                [&r.name],
            )
            .unwrap();
        let err = db.revision(&r.name).unwrap_err().to_string();
        assert!(err.contains("revision c-00001: stored spec"), "{err}");
    }
}
