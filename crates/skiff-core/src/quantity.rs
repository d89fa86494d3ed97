//! Resource quantities as users write them: memory (`256Mi`, `1G`, `512000000`) and CPU
//! (`1`, `0.5`, `500m`), with Kubernetes' suffixes so Knative specs read the same.

/// A quantity string that does not parse, or is out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    /// Not a number with a known suffix.
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        /// `memory` or `cpu`.
        what: &'static str,
        /// The text given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

fn invalid(what: &'static str, value: &str, why: &'static str) -> QuantityError {
    QuantityError::Invalid {
        what,
        value: value.to_owned(),
        why,
    }
}

/// Parses a memory quantity into bytes. Binary (`Ki Mi Gi Ti`) and decimal (`k K M G T`)
/// suffixes are accepted; a bare number is bytes. Zero is refused: a sandbox with no
/// memory cannot start, and a caller that wants "no limit" should pass none.
pub fn parse_memory_bytes(value: &str) -> Result<u64, QuantityError> {
    const WHAT: &str = "memory";
    let s = value.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    if digits.is_empty() {
        return Err(invalid(
            WHAT,
            value,
            "want a whole number with an optional suffix like Mi or G",
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| invalid(WHAT, value, "number too large"))?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(invalid(
                WHAT,
                value,
                "unknown suffix (use Ki, Mi, Gi, Ti, k, M, G or T)",
            ))
        }
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| invalid(WHAT, value, "number too large"))?;
    if bytes == 0 {
        return Err(invalid(WHAT, value, "must be greater than zero"));
    }
    Ok(bytes)
}

/// Parses a CPU quantity into millicores: `1` → 1000, `0.25` → 250, `500m` → 500.
/// Precision below one millicore is refused rather than rounded away silently.
pub fn parse_cpu_millis(value: &str) -> Result<u64, QuantityError> {
    const WHAT: &str = "cpu";
    let s = value.trim();
    let millis = if let Some(m) = s.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(WHAT, value, "want millicores like 500m"));
        }
        m.parse::<u64>()
            .map_err(|_| invalid(WHAT, value, "number too large"))?
    } else {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits_ok = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits_ok(whole) || !digits_ok(frac) {
            return Err(invalid(
                WHAT,
                value,
                "want cores like 1 or 0.5, or millicores like 500m",
            ));
        }
        if frac.len() > 3 {
            return Err(invalid(WHAT, value, "finer than one millicore"));
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| invalid(WHAT, value, "number too large"))?
        };
        let frac_millis: u64 = format!("{frac:0<3}").parse().unwrap_or(0);
        whole
            .checked_mul(1000)
            .and_then(|w| w.checked_add(frac_millis))
            .ok_or_else(|| invalid(WHAT, value, "number too large"))?
    };
    if millis == 0 {
        return Err(invalid(WHAT, value, "must be greater than zero"));
    }
    Ok(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_suffixes() {
        assert_eq!(parse_memory_bytes("256Mi"), Ok(256 << 20));
        assert_eq!(parse_memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory_bytes("4096"), Ok(4096));
        assert_eq!(parse_memory_bytes("2Gi"), Ok(2 << 30));
    }

    #[test]
    fn memory_rejects_nonsense() {
        for bad in ["", "Mi", "12Zi", "-5", "0", "1.5Gi", "99999999999999999999"] {
            assert!(parse_memory_bytes(bad).is_err(), "{bad:?} accepted");
        }
        let err = parse_memory_bytes("12Zi").unwrap_err().to_string();
        assert!(err.contains("12Zi") && err.contains("suffix"), "{err}");
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_cpu_millis("1"), Ok(1000));
        assert_eq!(parse_cpu_millis("0.25"), Ok(250));
        assert_eq!(parse_cpu_millis(".5"), Ok(500));
        assert_eq!(parse_cpu_millis("500m"), Ok(500));
        assert_eq!(parse_cpu_millis("2.5"), Ok(2500));
    }

    #[test]
    fn cpu_rejects_nonsense() {
        for bad in ["", "m", "0", "0.0001", "1.2.3", "-1", "abc", "1e3"] {
            assert!(parse_cpu_millis(bad).is_err(), "{bad:?} accepted");
        }
    }
}
