//! `Retry-After` (RFC 9110 §10.2.3): a number of seconds, or an HTTP-date.

use std::time::{Duration, SystemTime};

/// The wait a `Retry-After` value asks for, seen at `now`; a date already past asks for
/// none. `None` when the value is neither form.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than any u64 of seconds: as long as can be.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_dates_read_against_the_given_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        // RFC 9110's example date is 784111777 in Unix time.
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(date, now), Some(Duration::ZERO));
        let earlier = now - Duration::from_secs(90);
        assert_eq!(
            parse_retry_after(date, earlier),
            Some(Duration::from_secs(90))
        );
        for bad in ["", "-1", "1.5", "soon", "99999999999999999999999"] {
            let got = parse_retry_after(bad, now);
            if bad.starts_with('9') {
                assert_eq!(got, Some(Duration::from_secs(u64::MAX)));
            } else {
                assert_eq!(got, None, "{bad:?}");
            }
        }
    }
}
