//! End-to-end: the daemon's API answers exactly the routes `docs/openapi.yaml` documents,
//! with exactly the documented methods (the paths themselves are also checked against
//! the route table by a unit test in `server/api.rs`).

mod daemon;

use daemon::Daemon;

const METHODS: [&str; 5] = ["GET", "PUT", "PATCH", "POST", "DELETE"];

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn the_api_serves_the_documented_methods_and_refuses_the_others() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let doc: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let d = Daemon::start(&[]);
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = template.replace("{name}", "nosuch");
        for method in METHODS {
            let documented = item.get(method.to_lowercase()).is_some();
            let answer = d.api(method, &path, "", "{}");
            let code = status(&answer);
            if documented {
                assert_ne!(code, 405, "{method} {template} is documented: {answer}");
                assert!(
                    !answer.contains("no such API endpoint"),
                    "{method} {template} is documented: {answer}"
                );
            } else {
                assert_eq!(code, 405, "{method} {template} is not documented: {answer}");
            }
        }
    }
    let unknown = d.api("GET", "/v1/nothing", "", "");
    assert!(unknown.contains("no such API endpoint"), "{unknown}");
}

#[test]
fn the_logs_of_a_service_that_does_not_exist_are_a_404() {
    let d = Daemon::start(&[]);
    let answer = d.api("GET", "/v1/services/nope/logs", "", "");
    assert_eq!(status(&answer), 404, "{answer}");
    assert!(answer.contains("no such service: nope"), "{answer}");
    d.deploy_hello("yes", &[]);
    let answer = d.api("GET", "/v1/services/yes/logs", "", "");
    assert_eq!(status(&answer), 200, "{answer}");
}

#[test]
fn an_over_long_request_body_is_a_413() {
    let d = Daemon::start(&[]);
    let body = format!(
        "{{\"patch\":{{\"image\":\"hello\",\"env\":[\"A={}\"]}}}}",
        "x".repeat(3 << 20)
    );
    // The daemon answers before it has read it all: the rest of the write may fail.
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    let _ = write!(
        s,
        "PATCH /v1/services/big HTTP/1.1\r\nhost: skiff\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert_eq!(status(&answer), 413, "{}", &answer[..answer.len().min(300)]);
    assert!(
        answer.contains("too_large"),
        "{}",
        &answer[..answer.len().min(300)]
    );
}
