//! CloudEvents 1.0 over HTTP (the official SDK's model and binding): an event read from a
//! request in binary mode (`ce-*` fields) or structured mode
//! (`application/cloudevents+json`), its required attributes checked; an event written
//! for delivery in either mode; and the events skiff itself originates (schedules, async
//! invocations), with `id`, `source`, `type`, `time` and `specversion` set.

use cloudevents::binding::http::{Builder, Serializer};
use cloudevents::message::{BinaryDeserializer, Error as MessageError};
use cloudevents::{AttributesWriter, Data, Event, EventBuilder, EventBuilderV10};
use std::time::SystemTime;

pub use cloudevents::AttributesReader;
pub use cloudevents::Event as CloudEvent;

/// Why a request does not carry an event.
#[derive(Debug, thiserror::Error)]
#[error("not a CloudEvents 1.0 event: {0} (send ce-specversion, ce-id, ce-source and ce-type fields, or a JSON body as application/cloudevents+json)")]
pub struct EventError(String);

/// The event a request carries, in either mode.
pub fn read_event(headers: &http::HeaderMap, body: Vec<u8>) -> Result<Event, EventError> {
    let event = cloudevents::binding::http::to_event(headers, body).map_err(|e| {
        EventError(match e {
            MessageError::WrongEncoding {} => {
                "no ce-specversion field and no structured body".into()
            }
            other => other.to_string(),
        })
    })?;
    if event.specversion() != cloudevents::event::SpecVersion::V10 {
        return Err(EventError(format!(
            "specversion {} (skiff takes 1.0)",
            event.specversion()
        )));
    }
    Ok(json_data(event))
}

/// Whether a media type is JSON (`application/json`, `text/json`, `…+json`).
fn is_json(media_type: &str) -> bool {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// The event with data its content type says is JSON held as JSON, not bytes: a
/// structured event then carries it as `data` (the JSON format's rule), not
/// `data_base64`. Bytes that do not parse stay bytes.
fn json_data(mut event: Event) -> Event {
    let json_type = event.datacontenttype().is_some_and(is_json);
    if !json_type {
        return event;
    }
    let parsed = match event.data() {
        Some(Data::Binary(bytes)) => serde_json::from_slice::<serde_json::Value>(bytes).ok(),
        Some(Data::String(text)) => serde_json::from_str::<serde_json::Value>(text).ok(),
        _ => None,
    };
    if let Some(value) = parsed {
        let (content_type, schema, _) = event.take_data();
        event.set_data_unchecked(value);
        if let Some(ct) = content_type {
            event.set_datacontenttype(Some(ct));
        }
        if let Some(schema) = schema {
            event.set_dataschema(Some(schema));
        }
    }
    event
}

/// How an event goes out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Attributes as `ce-*` fields, the data as the body (CloudEvents' default for HTTP).
    #[default]
    Binary,
    /// The whole event as JSON, `application/cloudevents+json`.
    Structured,
}

/// A request's fields and body, ready to send.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Builder<Outgoing> for Outgoing {
    fn header(&mut self, key: &str, value: http::header::HeaderValue) {
        self.headers
            .push((key.to_owned(), value.as_bytes().to_vec()));
    }
    fn body(&mut self, bytes: Vec<u8>) -> cloudevents::message::Result<Outgoing> {
        self.body = bytes;
        Ok(std::mem::take(self))
    }
    fn finish(&mut self) -> cloudevents::message::Result<Outgoing> {
        Ok(std::mem::take(self))
    }
}

/// `event` as a request in `mode`.
pub fn write_event(event: Event, mode: Mode) -> Result<Outgoing, EventError> {
    match mode {
        Mode::Binary => event
            .deserialize_binary(Serializer::new(Outgoing::default()))
            .map_err(|e| EventError(e.to_string())),
        Mode::Structured => {
            let body = serde_json::to_vec(&event).map_err(|e| EventError(e.to_string()))?;
            Ok(Outgoing {
                headers: vec![(
                    "content-type".into(),
                    b"application/cloudevents+json".to_vec(),
                )],
                body,
            })
        }
    }
}

/// An event skiff originates: `id`, `source` (`/skiff/…`), `type` and `time` set, with
/// `data` of `content_type` when there is any.
pub fn originate(
    id: &str,
    source: &str,
    ty: &str,
    at: SystemTime,
    data: Option<(&str, Vec<u8>)>,
) -> Result<Event, EventError> {
    let mut builder = EventBuilderV10::new()
        .id(id)
        .source(source)
        .ty(ty)
        .time(chrono::DateTime::<chrono::Utc>::from(at));
    if let Some((content_type, bytes)) = data {
        builder = builder.data(content_type, bytes);
    }
    builder
        .build()
        .map(json_data)
        .map_err(|e| EventError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn binary_fields() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ce-specversion", "1.0"),
            ("ce-id", "e-1"),
            ("ce-source", "/orders"),
            ("ce-type", "order.created"),
            ("ce-region", "eu"),
            ("content-type", "application/json"),
        ]
    }

    #[test]
    fn binary_mode_reads_and_writes_back_the_same_event() {
        let event = read_event(&headers(&binary_fields()), b"{\"n\":1}".to_vec()).unwrap();
        assert_eq!(event.id(), "e-1");
        assert_eq!(event.ty(), "order.created");
        assert_eq!(event.source().to_string(), "/orders");
        assert_eq!(
            event
                .extension("region")
                .map(ToString::to_string)
                .as_deref(),
            Some("eu")
        );
        let out = write_event(event.clone(), Mode::Binary).unwrap();
        let field = |name: &str| {
            out.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(field("ce-id").as_deref(), Some("e-1"));
        assert_eq!(field("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(field("ce-region").as_deref(), Some("eu"));
        assert_eq!(field("content-type").as_deref(), Some("application/json"));
        assert_eq!(out.body, b"{\"n\":1}");
        let back: http::HeaderMap = out
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_bytes(v).unwrap(),
                )
            })
            .collect();
        assert_eq!(read_event(&back, out.body).unwrap(), event);
    }

    #[test]
    fn json_data_read_in_binary_mode_goes_out_structured_as_json() {
        let event = read_event(&headers(&binary_fields()), b"{\"n\":1}".to_vec()).unwrap();
        let out = write_event(event.clone(), Mode::Structured).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(doc["data"], serde_json::json!({"n": 1}), "{doc}");
        assert!(doc.get("data_base64").is_none(), "{doc}");
        assert_eq!(doc["datacontenttype"], "application/json");
        // And back to binary: the same bytes' meaning, the same type.
        let binary = write_event(event, Mode::Binary).unwrap();
        assert_eq!(binary.body, b"{\"n\":1}");
        // Bytes of another type stay bytes; JSON types with parameters and +json count.
        let mut text = binary_fields();
        text[5] = ("content-type", "application/octet-stream");
        let raw = read_event(&headers(&text), vec![0xff, 0]).unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&write_event(raw, Mode::Structured).unwrap().body).unwrap();
        assert!(doc.get("data_base64").is_some(), "{doc}");
        assert!(is_json("application/vnd.api+json; charset=utf-8"));
        assert!(!is_json("text/plain"));
        // What skiff makes itself, too.
        let made = originate(
            "i",
            "/s",
            "t",
            SystemTime::UNIX_EPOCH,
            Some(("application/json", b"[1]".to_vec())),
        )
        .unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&write_event(made, Mode::Structured).unwrap().body).unwrap();
        assert_eq!(doc["data"], serde_json::json!([1]), "{doc}");
    }

    #[test]
    fn structured_mode_reads_and_writes_json() {
        let body = br#"{"specversion":"1.0","id":"e-2","source":"/s","type":"t","data":{"a":1}}"#;
        let h = headers(&[("content-type", "application/cloudevents+json")]);
        let event = read_event(&h, body.to_vec()).unwrap();
        assert_eq!(event.id(), "e-2");
        let out = write_event(event.clone(), Mode::Structured).unwrap();
        assert_eq!(out.headers[0].1, b"application/cloudevents+json");
        let again = read_event(&h, out.body).unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn an_event_without_a_required_attribute_is_refused_by_name() {
        for missing in ["ce-id", "ce-source", "ce-type"] {
            let fields: Vec<_> = binary_fields()
                .into_iter()
                .filter(|(k, _)| *k != missing)
                .collect();
            let e = read_event(&headers(&fields), Vec::new())
                .unwrap_err()
                .to_string();
            let attribute = &missing[3..];
            assert!(e.contains(attribute), "{missing}: {e}");
        }
        let e = read_event(&headers(&[("content-type", "text/plain")]), b"hi".to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no ce-specversion"), "{e}");
        let mut old = binary_fields();
        old[0] = ("ce-specversion", "0.3");
        let e = read_event(&headers(&old), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("0.3"), "{e}");
    }

    #[test]
    fn events_skiff_makes_carry_every_required_attribute() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000);
        let event = originate(
            "inv-7",
            "/skiff/schedules/nightly",
            "dev.skiff.schedule.fired",
            at,
            Some(("application/json", b"{}".to_vec())),
        )
        .unwrap();
        let out = write_event(event, Mode::Binary).unwrap();
        let names: Vec<&str> = out.headers.iter().map(|(k, _)| k.as_str()).collect();
        for required in ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time"] {
            assert!(
                names.contains(&required),
                "{required} missing from {names:?}"
            );
        }
    }
}
