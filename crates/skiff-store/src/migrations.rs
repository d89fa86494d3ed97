//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.
//! A migration, once released, is never edited: add a new one.

use crate::StoreError;
use rusqlite::Connection;
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    // 1: images, tags, layers, instances.
    r#"
    CREATE TABLE images (
        digest        TEXT PRIMARY KEY,
        config_digest TEXT NOT NULL,
        config_json   TEXT NOT NULL,
        source        TEXT NOT NULL,
        size          INTEGER NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE image_tags (
        name   TEXT PRIMARY KEY,
        digest TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE
    );
    CREATE INDEX image_tags_digest ON image_tags(digest);
    CREATE TABLE image_layers (
        digest      TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,
        position    INTEGER NOT NULL,
        blob_digest TEXT NOT NULL,
        media_type  TEXT NOT NULL,
        size        INTEGER NOT NULL,
        diff_id     TEXT NOT NULL,
        chain_id    TEXT NOT NULL,
        PRIMARY KEY (digest, position)
    );
    CREATE INDEX image_layers_chain ON image_layers(chain_id);
    CREATE INDEX image_layers_blob ON image_layers(blob_digest);
    CREATE TABLE instances (
        id             TEXT PRIMARY KEY,
        image_digest   TEXT NOT NULL,
        state          TEXT NOT NULL,
        supervisor_pid INTEGER NOT NULL,
        pid            INTEGER,
        net_slot       INTEGER,
        log_path       TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        finished_at    INTEGER,
        exit_code      INTEGER,
        exit_signal    INTEGER,
        oom_killed     INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX instances_live_slot ON instances(net_slot) WHERE state = 'running';
    "#,
    // 2: the supervisor's start time, so a reused PID is not taken for a live supervisor.
    r#"
    ALTER TABLE instances ADD COLUMN supervisor_start INTEGER;
    "#,
    // 3: services and their immutable revisions; instances know what they serve.
    r#"
    CREATE TABLE services (
        name             TEXT PRIMARY KEY,
        serving_revision TEXT,
        created_at       INTEGER NOT NULL
    );
    CREATE TABLE revisions (
        name              TEXT PRIMARY KEY,
        service           TEXT NOT NULL REFERENCES services(name) ON DELETE CASCADE,
        generation        INTEGER NOT NULL,
        image_digest      TEXT NOT NULL REFERENCES images(digest),
        spec_json         TEXT NOT NULL,
        created_at        INTEGER NOT NULL,
        failure_at        INTEGER,
        failure_reason    TEXT,
        failure_log_tail  TEXT,
        UNIQUE (service, generation)
    );
    CREATE INDEX revisions_image ON revisions(image_digest);
    ALTER TABLE instances ADD COLUMN service TEXT;
    ALTER TABLE instances ADD COLUMN revision TEXT;
    CREATE INDEX instances_service ON instances(service);
    "#,
    // 4: a service's traffic split and tags (NULL: all to the latest ready revision).
    r#"
    ALTER TABLE services ADD COLUMN traffic_json TEXT;
    "#,
    // 5: a version per service, bumped on each change from one shared counter, for
    // conditional writes (a stale writer is refused rather than undoing a change).
    r#"
    ALTER TABLE services ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO counters (name, value) VALUES ('service_version', 0);
    "#,
    // 6: secrets and their versions, sealed (the values never reach this file in clear).
    r#"
    CREATE TABLE secrets (
        name        TEXT PRIMARY KEY,
        incarnation TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE secret_versions (
        secret      TEXT NOT NULL REFERENCES secrets(name) ON DELETE CASCADE,
        version     INTEGER NOT NULL,
        enabled     INTEGER NOT NULL,
        keys_json   TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        key_id      TEXT NOT NULL,
        nonce       BLOB NOT NULL,
        ciphertext  BLOB NOT NULL,
        PRIMARY KEY (secret, version)
    );
    "#,
    // 7: config maps, plain settings beside secrets.
    r#"
    CREATE TABLE config_maps (
        name        TEXT PRIMARY KEY,
        data_json   TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    "#,
    // 8: the audit log, append-only.
    r#"
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      INTEGER NOT NULL,
        who     TEXT NOT NULL,
        action  TEXT NOT NULL,
        result  TEXT NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    "#,
    // 9: API tokens, by the hash of their secret.
    r#"
    CREATE TABLE tokens (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        role          TEXT NOT NULL,
        services_json TEXT NOT NULL,
        hash          BLOB NOT NULL,
        created_at    INTEGER NOT NULL,
        revoked_at    INTEGER
    );
    "#,
    // 10: the services a secret may be given to (empty: any).
    r#"
    ALTER TABLE secrets ADD COLUMN services_json TEXT NOT NULL DEFAULT '[]';
    "#,
    // 11: async invocations, kept until delivered or given up on.
    r#"
    CREATE TABLE invocations (
        id              TEXT PRIMARY KEY,
        service         TEXT NOT NULL,
        idempotency_key TEXT,
        method          TEXT NOT NULL,
        target          TEXT NOT NULL,
        fields          BLOB NOT NULL,
        body            BLOB NOT NULL,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        created_ms      INTEGER NOT NULL,
        next_ms         INTEGER NOT NULL,
        finished_ms     INTEGER,
        last_status     INTEGER,
        last_error      TEXT
    );
    CREATE UNIQUE INDEX invocations_by_key ON invocations (service, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX invocations_due ON invocations (state, next_ms);
    CREATE INDEX invocations_of_service ON invocations (service, created_ms);
    "#,
    // 12: event triggers (schedules, topics and their subscriptions), and what made
    // each invocation (NULL: an async request; `schedule/NAME`, `subscription/NAME`).
    r#"
    ALTER TABLE invocations ADD COLUMN origin TEXT;
    CREATE INDEX invocations_of_origin ON invocations (origin, created_ms)
        WHERE origin IS NOT NULL;
    CREATE TABLE schedules (
        name        TEXT PRIMARY KEY,
        spec_json   TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        last_run_ms INTEGER
    );
    CREATE TABLE topics (
        name       TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE subscriptions (
        name       TEXT PRIMARY KEY,
        topic      TEXT NOT NULL REFERENCES topics (name),
        spec_json  TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    "#,
    // 13: invocations indexed for what is asked of them at a high rate: the pending ones
    // by when they are due (most never are pending: they are handed over as they are
    // stored, so they never enter this index), the settled ones by when they ended (for
    // forgetting them without reading the table).
    r#"
    DROP INDEX invocations_due;
    CREATE INDEX invocations_pending ON invocations (next_ms) WHERE state = 'pending';
    CREATE INDEX invocations_settled ON invocations (finished_ms)
        WHERE finished_ms IS NOT NULL;
    "#,
    // 14: each service's newest revision found from an index alone (`skiff ls` at ten
    // thousand services: the table lookup per revision was most of its query's time).
    r#"
    CREATE INDEX revisions_newest ON revisions (service, generation, name);
    "#,
    // 15: each service's newest revision kept in its own row, by triggers on every change
    // to revisions, so that listing services reads one table in order and seeks nothing
    // per service (`skiff ls` at ten thousand services: a seek into the revisions index
    // per service was a third of the query).
    r#"
    ALTER TABLE services ADD COLUMN latest_revision TEXT;
    UPDATE services SET latest_revision = (SELECT r.name FROM revisions r
        WHERE r.service = services.name ORDER BY r.generation DESC LIMIT 1);
    CREATE TRIGGER revisions_latest_on_insert AFTER INSERT ON revisions BEGIN
        UPDATE services SET latest_revision = (SELECT r.name FROM revisions r
            WHERE r.service = NEW.service ORDER BY r.generation DESC LIMIT 1)
        WHERE name = NEW.service;
    END;
    CREATE TRIGGER revisions_latest_on_delete AFTER DELETE ON revisions BEGIN
        UPDATE services SET latest_revision = (SELECT r.name FROM revisions r
            WHERE r.service = OLD.service ORDER BY r.generation DESC LIMIT 1)
        WHERE name = OLD.service;
    END;
    CREATE TRIGGER revisions_latest_on_update AFTER UPDATE OF name, service, generation
        ON revisions BEGIN
        UPDATE services SET latest_revision = (SELECT r.name FROM revisions r
            WHERE r.service = services.name ORDER BY r.generation DESC LIMIT 1)
        WHERE name IN (OLD.service, NEW.service);
    END;
    "#,
];

/// The schema version `conn`'s database has, refused when newer than this build knows.
pub(crate) fn version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    Ok(found)
}

/// Whether a database at schema `version` needs no migration.
pub(crate) fn is_current(version: i64) -> bool {
    version == MIGRATIONS.len() as i64
}

pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    // An up-to-date database is only read: opening it writes nothing (a full disk
    // must not keep skiff from reading its state, or from removing what fills it).
    if is_current(version(conn, path)?) {
        return Ok(());
    }
    let known = MIGRATIONS.len() as i64;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Read again under the write lock: another process may have migrated meanwhile.
    let found = version(&tx, path)?;
    for sql in &MIGRATIONS[found as usize..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[test]
    fn migrates_fresh_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Store::open(&path).unwrap());
        let s = Store::open(&path).unwrap();
        let v: i64 = s
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, super::MIGRATIONS.len() as i64);
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 999).unwrap();
        }
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("999") && err.contains("newer"), "{err}");
    }

    #[test]
    fn a_database_before_migration_15_gains_each_services_newest_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            for sql in &super::MIGRATIONS[..14] {
                c.execute_batch(sql).unwrap();
            }
            c.execute_batch(
                "INSERT INTO images (digest, config_digest, config_json, source, size, created_at)
                     VALUES ('sha256:i', 'sha256:c', '{}', 't', 1, 1);
                 INSERT INTO services (name, created_at) VALUES ('a', 1), ('b', 1);
                 INSERT INTO revisions (name, service, generation, image_digest, spec_json, created_at)
                     VALUES ('a-2', 'a', 2, 'sha256:i', '{}', 1),
                            ('a-7', 'a', 7, 'sha256:i', '{}', 1),
                            ('a-3', 'a', 3, 'sha256:i', '{}', 1);",
            )
            .unwrap();
            c.pragma_update(None, "user_version", 14).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let latest: Vec<_> = s
            .service_lines()
            .unwrap()
            .into_iter()
            .map(|l| (l.name, l.latest_revision))
            .collect();
        assert_eq!(
            latest,
            [
                ("a".to_owned(), Some("a-7".to_owned())),
                ("b".to_owned(), None)
            ]
        );
    }

    #[test]
    fn a_database_of_the_last_schema_keeps_its_services_and_gains_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            for sql in &super::MIGRATIONS[..4] {
                c.execute_batch(sql).unwrap();
            }
            c.execute(
                "INSERT INTO services (name, created_at, traffic_json) VALUES ('old', 1, NULL)",
                [],
            )
            .unwrap();
            c.pragma_update(None, "user_version", 4).unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let old = s.service("old").unwrap().unwrap();
        assert_eq!((old.version, old.created_at), (0, 1));
        s.set_traffic("old", None).unwrap();
        assert_eq!(s.service("old").unwrap().unwrap().version, 1);
    }
}
