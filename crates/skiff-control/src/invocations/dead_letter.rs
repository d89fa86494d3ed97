//! Dead letters sent to a service: the copy of a delivery given up on, addressed to the
//! dead-letter service (its Host, its path) with why it died, stored with the dead
//! outcome in one commit. A copy is keyed by the original's id, so writing the outcome
//! twice leaves one; a copy that dies is not sent on again (no loops between two
//! services that dead-letter to each other).

use super::{fields, new_id, now_ms};
use skiff_store::{InvocationRecord, NewInvocation};

/// The origin of dead letters.
const ORIGIN: &str = "deadletter/";

/// The copy of `dead` for `(service, path)`, unless `dead` is a dead letter itself.
pub(super) fn copy(
    dead: &InvocationRecord,
    (service, path): &(String, String),
    why: &str,
    status: Option<u16>,
) -> Option<NewInvocation> {
    if dead
        .origin
        .as_deref()
        .is_some_and(|o| o.starts_with(ORIGIN))
    {
        return None;
    }
    let mut fields = fields::host_of(service);
    let mut binary_event = false;
    for (name, value) in fields::each(&dead.fields) {
        if name.eq_ignore_ascii_case(b"host") {
            continue;
        }
        binary_event |= name.eq_ignore_ascii_case(b"ce-specversion");
        fields::push(&mut fields, &String::from_utf8_lossy(name), value);
    }
    let mut add = |name: &str, value: &str| {
        let value: String = value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        fields::push(&mut fields, name, value.as_bytes());
    };
    add("x-skiff-dead-letter-reason", why);
    add("x-skiff-dead-letter-from", &dead.service);
    add("x-skiff-dead-letter-id", &dead.id);
    if binary_event {
        // Knative's extensions on dead-lettered events: where it was going, and what
        // that answered.
        let dest = format!(
            "http://{}{}{}",
            dead.service,
            skiff_router::SERVICE_SUFFIX,
            dead.target
        );
        add("ce-knativeerrordest", &dest);
        if let Some(code) = status {
            add("ce-knativeerrorcode", &code.to_string());
        }
    }
    let origin = format!("{ORIGIN}{}", dead.id);
    Some(NewInvocation {
        id: new_id(),
        service: service.clone(),
        idempotency_key: Some(origin.clone()),
        method: dead.method.clone(),
        target: path.clone(),
        fields,
        body: dead.body.clone(),
        created_ms: now_ms(),
        origin: Some(origin),
        delivering: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_store::InvocationState;

    fn dead(fields: &str, origin: Option<&str>) -> InvocationRecord {
        InvocationRecord {
            id: "inv-1".into(),
            service: "orders".into(),
            idempotency_key: None,
            method: "POST".into(),
            target: "/pay".into(),
            fields: fields.as_bytes().to_vec(),
            body: b"{}".to_vec(),
            state: InvocationState::Dead,
            attempts: 4,
            created_ms: 1,
            next_ms: 1,
            finished_ms: Some(2),
            last_status: Some(500),
            last_error: None,
            origin: origin.map(Into::into),
        }
    }

    #[test]
    fn a_copy_goes_to_the_sink_with_why_and_knatives_extensions() {
        let sink = ("dlq".to_owned(), "/failed".to_owned());
        let d = dead(
            "host: orders.localhost\r\nce-specversion: 1.0\r\nce-id: e1\r\n",
            Some("subscription/s"),
        );
        let c = copy(&d, &sink, "gave up\nafter 4", Some(500)).unwrap();
        let text = String::from_utf8(c.fields).unwrap();
        assert!(
            text.starts_with("host: dlq.svc.skiff.internal\r\n"),
            "{text}"
        );
        assert!(!text.contains("orders.localhost"), "{text}");
        assert!(text.contains("ce-id: e1\r\n"), "{text}");
        assert!(
            text.contains("x-skiff-dead-letter-reason: gave up after 4\r\n"),
            "{text}"
        );
        assert!(
            text.contains("ce-knativeerrordest: http://orders.svc.skiff.internal/pay\r\n"),
            "{text}"
        );
        assert!(text.contains("ce-knativeerrorcode: 500\r\n"), "{text}");
        assert_eq!((c.service.as_str(), c.target.as_str()), ("dlq", "/failed"));
        assert_eq!(c.idempotency_key.as_deref(), Some("deadletter/inv-1"));
        assert_eq!(c.body, b"{}");
        // Not an event: no ce-* added.
        let plain = copy(&dead("host: x\r\n", None), &sink, "x", None).unwrap();
        assert!(!String::from_utf8(plain.fields).unwrap().contains("ce-"));
        // A dead letter that dies goes nowhere else.
        assert!(copy(&dead("", Some("deadletter/inv-0")), &sink, "x", None).is_none());
    }
}
