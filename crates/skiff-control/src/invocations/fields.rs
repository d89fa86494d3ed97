//! An invocation's kept request fields as the store holds them: `name: value\r\n` each,
//! as the router writes them. One reader and one writer for every part that looks into
//! them (the delivery, the API's view, dead letters, events' attributes) or adds to them.

/// Each field's name and value (without the whitespace around it); a line that is not
/// a field is skipped.
pub(crate) fn each(fields: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    fields.split(|b| *b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|b| *b == b':')?;
        Some((line[..colon].trim_ascii(), line[colon + 1..].trim_ascii()))
    })
}

/// The value of the first field named `name` (in any case).
pub(crate) fn value<'f>(fields: &'f [u8], name: &str) -> Option<&'f [u8]> {
    each(fields).find_map(|(n, v)| n.eq_ignore_ascii_case(name.as_bytes()).then_some(v))
}

/// Appends field `name: value`.
pub(crate) fn push(fields: &mut Vec<u8>, name: &str, value: &[u8]) {
    fields.extend_from_slice(name.as_bytes());
    fields.extend_from_slice(b": ");
    fields.extend_from_slice(value);
    fields.extend_from_slice(b"\r\n");
}

/// The Host field of service `service`'s deliveries.
pub(crate) fn host_of(service: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    push(
        &mut fields,
        "host",
        format!("{service}{}", skiff_router::SERVICE_SUFFIX).as_bytes(),
    );
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_they_are_written() {
        let mut fields = host_of("db");
        push(&mut fields, "CE-Type", b"t");
        fields.extend_from_slice(b"not a field\r\n");
        push(&mut fields, "x", b" padded ");
        assert!(fields.starts_with(b"host: db.svc.skiff.internal\r\n"));
        let all: Vec<_> = each(&fields).collect();
        assert_eq!(
            all,
            [
                (&b"host"[..], &b"db.svc.skiff.internal"[..]),
                (b"CE-Type", b"t"),
                (b"x", b"padded"),
            ]
        );
        assert_eq!(value(&fields, "ce-type"), Some(&b"t"[..]));
        assert_eq!(value(&fields, "ce-id"), None);
    }
}
