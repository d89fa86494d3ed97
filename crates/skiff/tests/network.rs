//! The service network end to end: instances call each other by name through the router
//! (waking the callee from zero), resolve `host.skiff.internal`, reach public addresses
//! through NAT, private ones only when allowed, the host only on allowed ports, and
//! nothing outside with `--egress none`.
//!
//! "The outside" is a network namespace each test makes for itself, with a hello server
//! in it; no packet leaves the machine.

mod daemon;

use daemon::outside::Outside;
use daemon::{hello_binary, Daemon};
use std::net::TcpListener;

/// What hello's `/connect` (or `/call`, `/resolve`) says from inside `service`.
fn from_inside(d: &Daemon, service: &str, path: &str) -> (u16, String) {
    let r = d.get(service, path);
    (r.status, r.text())
}

#[test]
fn services_call_each_other_by_name_and_wake_the_callee_from_zero() {
    let d = Daemon::start(&[]);
    d.deploy_hello("front", &[]);
    d.deploy_hello("back", &["--initial-instances", "0"]);
    let described = d.json(&["describe", "back"]);
    assert_eq!(described["instances"].as_array().unwrap().len(), 0);

    for to in ["back", "back.svc.skiff.internal"] {
        let (status, body) = from_inside(&d, "front", &format!("/call?to={to}&path=/"));
        assert_eq!(status, 200, "{to}: {body}");
        assert!(
            body.starts_with("HTTP/1.1 200") && body.contains("hello from back-"),
            "{to}: {body}"
        );
    }
    assert!(d.ready("back") >= 1, "back did not wake");

    let (status, body) = from_inside(&d, "front", "/resolve?name=back");
    assert_eq!(
        (status, body.trim()),
        (200, d.subnet.service_addr().as_str())
    );
    let host = format!("10.91.{}.2", d.subnet.third_octet);
    let (_, body) = from_inside(&d, "front", "/resolve?name=host.skiff.internal");
    assert_eq!(body.trim(), host);
    let (status, body) = from_inside(&d, "front", "/resolve?name=nobody.svc.skiff.internal");
    assert_eq!(status, 502, "{body}");
    // A removed service's name goes with it.
    d.ok(&["rm", "back"]);
    let (status, body) = from_inside(&d, "front", "/resolve?name=back");
    assert_eq!(status, 502, "{body}");
}

#[test]
fn egress_reaches_public_addresses_private_ones_when_allowed_and_nothing_with_none() {
    let outside = Outside::new(1, hello_binary().to_str().unwrap(), &[], 8000);
    let d = Daemon::start(&[]);
    d.deploy_hello("open", &[]);
    let public = format!("/call?to={}&port=8000&path=/", outside.public);
    let (status, body) = from_inside(&d, "open", &public);
    assert_eq!(status, 200, "public through NAT: {body}");
    assert!(body.contains("hello from"), "{body}");
    let private = format!("/connect?to={}&port=8000", outside.private);
    let (status, body) = from_inside(&d, "open", &private);
    assert_eq!(status, 502, "a private address without a rule: {body}");
    assert!(body.contains("No route to host"), "{body}");

    let rule = format!("{}/32:8000", outside.private);
    d.deploy_hello("vpc", &["--egress-allow", &rule]);
    let (status, body) = from_inside(&d, "vpc", &private);
    assert_eq!(status, 200, "allowed: {body}");
    let (status, body) = from_inside(
        &d,
        "vpc",
        &format!("/connect?to={}&port=8001", outside.private),
    );
    assert_eq!(status, 502, "another port of the allowed address: {body}");

    d.deploy_hello("sealed", &["--egress", "none"]);
    let (status, body) = from_inside(&d, "sealed", &public);
    assert_eq!(status, 502, "--egress none: {body}");
    let (status, body) = from_inside(&d, "sealed", "/call?to=open&path=/");
    assert_eq!(status, 200, "other services stay reachable: {body}");
    // The rule outlives the mode: none plus a rule reaches just that.
    d.deploy_hello("sealed", &["--egress-allow", &rule]);
    let (status, body) = from_inside(&d, "sealed", &private);
    assert_eq!(status, 200, "none with a rule: {body}");
    let (status, body) = from_inside(&d, "sealed", &public);
    assert_eq!(status, 502, "none with a rule, elsewhere: {body}");
}

#[test]
fn the_host_is_reached_by_name_on_allowed_ports_only() {
    let allowed = TcpListener::bind("0.0.0.0:0").unwrap();
    let closed = TcpListener::bind("0.0.0.0:0").unwrap();
    let loopback_only = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    let d = Daemon::start(&[]);
    let rule = format!("host.skiff.internal:{}", port(&allowed));
    d.deploy_hello("db-user", &["--egress-allow", &rule]);
    let connect =
        |to: &str, p: u16| from_inside(&d, "db-user", &format!("/connect?to={to}&port={p}"));

    let (status, body) = connect("host.skiff.internal", port(&allowed));
    assert_eq!(status, 200, "allowed host port: {body}");
    let (status, body) = connect("host.skiff.internal", port(&closed));
    assert_eq!(status, 502, "a host port not allowed: {body}");
    assert!(body.contains("refused"), "{body}");
    // The ingress is on the host's loopback: unreachable however it is named.
    let (status, body) = connect("host.skiff.internal", d.port);
    assert_eq!(status, 502, "{body}");
    let (status, body) = connect("127.0.0.1", port(&loopback_only));
    assert_eq!(status, 502, "the instance's 127.0.0.1 is its own: {body}");
    // The host's end of the instance's own link is the host too.
    let gateway = format!("10.91.{}.5", d.subnet.third_octet);
    let (status, body) = connect(&gateway, port(&allowed));
    assert_eq!(status, 502, "the host by another address: {body}");
    // A service without the rule does not reach the allowed port either.
    d.deploy_hello("other", &[]);
    let (status, body) = from_inside(
        &d,
        "other",
        &format!("/connect?to=host.skiff.internal&port={}", port(&allowed)),
    );
    assert_eq!(status, 502, "{body}");
}
