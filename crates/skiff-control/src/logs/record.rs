//! One CRI log record (`TIME STREAM TAG MESSAGE`, as the sandbox writes them) and the
//! times records are compared by. Records' times have one form (nanoseconds, `Z`), so
//! they compare as strings; a time from a user is brought to that form first.

use crate::documents::LogLine;

/// Splits a CRI log record into (time, stream, message).
pub(crate) fn parse(line: &str) -> Option<(&str, &str, &str)> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let _tag = parts.next()?;
    Some((time, stream, parts.next().unwrap_or("")))
}

/// The line of instance `instance` that record `bytes` (without its newline) holds.
pub(crate) fn log_line(bytes: &[u8], instance: &str) -> Option<LogLine> {
    let text = String::from_utf8_lossy(bytes);
    let (time, stream, message) = parse(&text)?;
    Some(LogLine {
        time: time.to_owned(),
        instance: instance.to_owned(),
        stream: stream.to_owned(),
        message: message.to_owned(),
    })
}

/// The time at the start of a record, if it has one.
pub(crate) fn time_of(record: &[u8]) -> Option<&str> {
    let end = record.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&record[..end]).ok()
}

/// An RFC 3339 UTC time (`2026-01-02T15:04:05Z`, with up to nine digits of fraction)
/// in the records' own form, `2026-01-02T15:04:05.000000000Z`; `None` when `time` is
/// not one.
pub fn canonical_time(time: &str) -> Option<String> {
    let b = time.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return None;
    }
    let fraction = match time[19..].strip_suffix('Z')? {
        "" => "",
        f => f.strip_prefix('.')?,
    };
    if fraction.is_empty() && time.len() != 20
        || fraction.len() > 9
        || !fraction.bytes().all(|d| d.is_ascii_digit())
    {
        return None;
    }
    Some(format!("{}.{fraction:0<9}Z", &time[..19]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_into_time_stream_and_message() {
        assert_eq!(
            parse("2026-01-01T00:00:00.000000000Z stderr F oops: a b"),
            Some(("2026-01-01T00:00:00.000000000Z", "stderr", "oops: a b"))
        );
        assert_eq!(parse("garbled"), None);
        assert_eq!(
            time_of(b"2026-01-01T00:00:00.000000000Z stdout F x"),
            Some("2026-01-01T00:00:00.000000000Z")
        );
    }

    #[test]
    fn user_times_take_the_records_form_so_they_compare_as_strings() {
        let whole = canonical_time("2026-01-02T15:04:05Z").unwrap();
        assert_eq!(whole, "2026-01-02T15:04:05.000000000Z");
        // Without the padding, "…05Z" sorts after every record of second 05.
        assert!(whole.as_str() <= "2026-01-02T15:04:05.500000000Z");
        assert_eq!(
            canonical_time("2026-01-02T15:04:05.5Z").unwrap(),
            "2026-01-02T15:04:05.500000000Z"
        );
        assert_eq!(
            canonical_time("2026-01-02T15:04:05.123456789Z").unwrap(),
            "2026-01-02T15:04:05.123456789Z"
        );
        for bad in [
            "",
            "yesterday",
            "2026-01-02T15:04:05",
            "2026-01-02T15:04:05+02:00",
            "2026-01-02 15:04:05Z",
            "2026-01-02T15:04:05.Z",
            "2026-01-02T15:04:05.1234567890Z",
            "2026-01-02T15:04:05.12aZ",
            "2026-01-02T15:04:0xZ",
        ] {
            assert_eq!(canonical_time(bad), None, "{bad:?}");
        }
    }
}
