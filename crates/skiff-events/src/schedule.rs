//! Schedules: a cron pattern (5 fields, or 6 with seconds first; POSIX/Vixie semantics,
//! `croner`'s) read in an IANA time zone. Across DST changes it does what cron does: a
//! job at a fixed time that falls in the hour skipped in spring runs at the first time
//! after the gap; one in the hour repeated in autumn runs once; jobs on intervals and
//! wildcards keep to real time and run in both passes of a repeated hour.
//!
//! Runs missed while the daemon was down are caught up at most once ([`Schedule::on_start`]):
//! a schedule every minute down for an hour runs once at start, not sixty times.

use chrono::{DateTime, FixedOffset, Offset, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::JobType;
use std::time::SystemTime;

/// Why a schedule is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "cron pattern {pattern:?}: {why} (5 fields, or 6 with seconds first: \"*/5 * * * *\")"
    )]
    Pattern { pattern: String, why: String },
    #[error("time zone {0:?} is not an IANA zone name (Europe/Paris, America/New_York, UTC)")]
    Zone(String),
}

/// A cron pattern in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
}

/// What a schedule does when the daemon starts, knowing when it last ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// The latest occurrence missed while down, to run once now.
    pub catch_up: Option<SystemTime>,
    /// The next occurrence after now.
    pub next: Option<SystemTime>,
}

impl Schedule {
    /// Reads `pattern` in zone `zone`.
    pub fn parse(pattern: &str, zone: &str) -> Result<Schedule, ScheduleError> {
        let bad = |why: String| ScheduleError::Pattern {
            pattern: pattern.to_owned(),
            why,
        };
        let fields = pattern.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(bad(format!("{fields} fields")));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| bad(e.to_string()))?;
        let zone: chrono_tz::Tz = zone
            .parse()
            .map_err(|_| ScheduleError::Zone(zone.to_owned()))?;
        Ok(Schedule { cron, zone })
    }

    /// The first occurrence strictly after `after`; `None` when there is none (the 30th
    /// of February).
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        // Occurrences are whole seconds; croner keeps the fraction it is given.
        let after = whole_second(DateTime::<Utc>::from(after));
        let mut best = self.zoned_next(after)?;
        // croner searches by wall-clock time, which runs twice through an hour repeated
        // in autumn: from the first pass it jumps past the second. Jobs on intervals
        // keep to real time, so each side of a change is also searched at its own fixed
        // offset, and a time found is kept if the zone really is at that offset then.
        if self.cron.determine_job_type() == JobType::IntervalWildcard {
            for probe in [after, after + chrono::Duration::hours(3)] {
                let offset = self.offset_at(probe);
                let Ok(found) = self
                    .cron
                    .find_next_occurrence(&after.with_timezone(&offset), false)
                else {
                    continue;
                };
                let found = found.with_timezone(&Utc);
                if found > after && found < best && self.offset_at(found) == offset {
                    best = found;
                }
            }
        }
        Some(SystemTime::from(best))
    }

    /// croner's next occurrence in the zone after `after`, stepping on when a wall-clock
    /// time in a repeated hour makes it answer one that has passed.
    fn zoned_next(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = after;
        for _ in 0..4 {
            let found = self
                .cron
                .find_next_occurrence(&from.with_timezone(&self.zone), false)
                .ok()?
                .with_timezone(&Utc);
            if found > after {
                return Some(found);
            }
            from += chrono::Duration::hours(1);
        }
        None
    }

    fn offset_at(&self, t: DateTime<Utc>) -> FixedOffset {
        self.zone.offset_from_utc_datetime(&t.naive_utc()).fix()
    }

    /// At a start at `now`, after a last run due at `last` (`None`: never ran): the one
    /// missed run to make now, if any, and the next.
    pub fn on_start(&self, last: Option<SystemTime>, now: SystemTime) -> Start {
        let missed = last.and_then(|last| {
            let first = self.next_after(last)?;
            (first <= now).then(|| self.latest_at_or_before(first, now))
        });
        Start {
            catch_up: missed,
            next: self.next_after(now),
        }
    }

    /// The latest occurrence in `[first, now]`, `first` being one.
    fn latest_at_or_before(&self, first: SystemTime, now: SystemTime) -> SystemTime {
        let local = whole_second(DateTime::<Utc>::from(now)).with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| SystemTime::from(t.with_timezone(&Utc)))
            .filter(|t| *t >= first)
            .unwrap_or(first)
    }
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    t.with_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A UTC time written out.
    fn utc(text: &str) -> SystemTime {
        SystemTime::from(text.parse::<DateTime<Utc>>().unwrap())
    }

    fn show(t: SystemTime) -> String {
        DateTime::<Utc>::from(t)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn next_n(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                show(t)
            })
            .collect()
    }

    #[test]
    fn occurrences_are_whole_seconds_whatever_the_time_asked_from() {
        let s = Schedule::parse("* * * * * *", "Europe/Paris").unwrap();
        let from = utc("2026-01-01T00:00:00.633Z");
        let next = s.next_after(from).unwrap();
        assert_eq!(next, utc("2026-01-01T00:00:01Z"));
        let start = s.on_start(
            Some(utc("2026-01-01T00:00:00Z")),
            utc("2026-01-01T00:00:05.5Z"),
        );
        assert_eq!(start.catch_up, Some(utc("2026-01-01T00:00:05Z")));
        assert_eq!(start.next, Some(utc("2026-01-01T00:00:06Z")));
    }

    #[test]
    fn five_fields_or_six_with_seconds_in_a_zone() {
        let s = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        assert_eq!(
            next_n(&s, "2026-01-01T00:01:00Z", 2),
            ["2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z"]
        );
        let s = Schedule::parse("*/20 * * * * *", "UTC").unwrap();
        assert_eq!(
            next_n(&s, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:40Z",
                "2026-01-01T00:01:00Z"
            ]
        );
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 in summer.
        let s = Schedule::parse("0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            next_n(&s, "2026-01-10T12:00:00Z", 1),
            ["2026-01-11T08:00:00Z"]
        );
        assert_eq!(
            next_n(&s, "2026-07-10T12:00:00Z", 1),
            ["2026-07-11T07:00:00Z"]
        );
    }

    #[test]
    fn bad_patterns_and_zones_are_named() {
        for bad in [
            "* * * *",
            "* * * * * * *",
            "61 * * * *",
            "* * * * Funday",
            "",
        ] {
            let e = Schedule::parse(bad, "UTC").unwrap_err();
            assert!(
                matches!(&e, ScheduleError::Pattern { pattern, .. } if pattern == bad),
                "{bad:?}: {e:?}"
            );
        }
        let e = Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(e, ScheduleError::Zone("Mars/Olympus".into()));
        let never = Schedule::parse("0 0 30 2 *", "UTC").unwrap();
        assert_eq!(never.next_after(utc("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn spring_forward_a_skipped_fixed_time_runs_just_after_the_gap() {
        // Paris, 2026-03-29: 02:00 local becomes 03:00 (01:00 UTC).
        let s = Schedule::parse("30 2 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            next_n(&s, "2026-03-28T12:00:00Z", 2),
            // The 28th at 02:30 CET is yet to come; the 29th has no 02:30: it runs at
            // 03:00 CEST (01:00 UTC); the 30th at 02:30 CEST.
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
        // Hourly jobs keep to real time: no hour runs twice, none is invented.
        let hourly = Schedule::parse("0 * * * *", "Europe/Paris").unwrap();
        assert_eq!(
            next_n(&hourly, "2026-03-28T23:30:00Z", 3),
            [
                "2026-03-29T00:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z"
            ]
        );
    }

    #[test]
    fn fall_back_a_fixed_time_runs_once_and_intervals_run_in_both_passes() {
        // Paris, 2026-10-25: 03:00 CEST (01:00 UTC) goes back to 02:00 CET.
        let s = Schedule::parse("30 2 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            next_n(&s, "2026-10-24T12:00:00Z", 2),
            // 02:30 CEST is 00:30 UTC; 02:30 CET (01:30 UTC) is not a second run.
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // Asked from inside the second pass, it neither repeats nor goes back in time.
        assert_eq!(
            next_n(&s, "2026-10-25T01:00:00Z", 1),
            ["2026-10-26T01:30:00Z"]
        );
        let every_30 = Schedule::parse("*/30 * * * *", "Europe/Paris").unwrap();
        let runs = next_n(&every_30, "2026-10-24T23:45:00Z", 5);
        assert_eq!(
            runs,
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
    }

    #[test]
    fn runs_missed_while_down_are_caught_up_once() {
        let s = Schedule::parse("* * * * *", "UTC").unwrap();
        let last = utc("2026-05-01T10:00:00Z");
        let now = utc("2026-05-01T11:00:30Z");
        let start = s.on_start(Some(last), now);
        // Sixty runs missed: the latest one is made, once.
        assert_eq!(
            start.catch_up.map(show).as_deref(),
            Some("2026-05-01T11:00:00Z")
        );
        assert_eq!(
            start.next.map(show).as_deref(),
            Some("2026-05-01T11:01:00Z")
        );
        // Nothing missed, or never ran: nothing to catch up.
        let soon = last + Duration::from_secs(30);
        assert_eq!(s.on_start(Some(last), soon).catch_up, None);
        assert_eq!(s.on_start(None, now).catch_up, None);
    }
}
