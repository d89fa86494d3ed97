//! Durations as users write them: ISO 8601 (`PT0.5S`, `PT1H30M`, `P1D`, as Knative's
//! `backoffDelay` and `timeout` are) or the short form skiff's flags take (`500ms`,
//! `2s`, `1h 30m`). A day is 24 hours here: delivery delays are spans of time, not
//! calendar dates.

use std::time::Duration;

/// Why a duration does not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration ({why}); write PT0.5S, PT1M, P1D or 500ms, 2s, 1h")]
pub struct DurationError {
    pub text: String,
    pub why: String,
}

/// Reads `text` as a duration of zero or more.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let bad = |why: String| DurationError {
        text: text.to_owned(),
        why,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty".into()));
    }
    let span: jiff::Span = trimmed
        .parse()
        .map_err(|e: jiff::Error| bad(e.to_string()))?;
    let signed = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| bad(e.to_string()))?;
    Duration::try_from(signed).map_err(|_| bad("it is negative".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_8601_and_short_forms_read_alike() {
        let ms = |n| Duration::from_millis(n);
        for (text, want) in [
            ("PT0.2S", ms(200)),
            ("PT1S", ms(1000)),
            ("pt1m30s", ms(90_000)),
            ("PT1H", ms(3_600_000)),
            ("P1D", ms(86_400_000)),
            ("P1DT1H", ms(90_000_000)),
            ("PT0S", ms(0)),
            ("500ms", ms(500)),
            ("2s", ms(2000)),
            ("1h 30m", ms(5_400_000)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn what_is_not_a_duration_is_named() {
        for text in ["", "  ", "soon", "P", "-PT1S", "PT1X", "P1M"] {
            let e = parse_duration(text).unwrap_err();
            assert_eq!(e.text, text);
            assert!(e.to_string().contains("PT0.5S"), "{e}");
        }
    }
}
