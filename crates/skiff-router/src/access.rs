//! Who may call a private service: an instance of a service it names (known by the
//! address its request comes from, which the host's firewall keeps from being forged), or
//! a request bearing a token that may invoke it. Owns the decision and the caller's
//! identity sent on to the app; it must not read tokens or instances itself: the
//! [`Gate`] the control plane gives the router answers from memory, never from a store,
//! because it is asked on the hot path.

use std::net::IpAddr;
use std::sync::Arc;

/// Which services' instances may call a private service without a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Callers {
    /// Every service of this daemon.
    Any,
    /// These services only (none: tokens only).
    Only(Vec<String>),
}

impl Callers {
    fn allow(&self, service: &str) -> bool {
        match self {
            Callers::Any => true,
            Callers::Only(names) => names.iter().any(|n| n == service),
        }
    }
}

/// A private service's rules, shared by all the host labels it answers at.
#[derive(Debug)]
pub struct Private {
    /// The service's name, as tokens name it.
    pub service: String,
    pub callers: Callers,
}

/// What a token is to a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// Not a valid, unrevoked token.
    Invalid,
    /// Valid, but it may not invoke this service.
    Denied,
    /// It may; the token's name.
    Allowed(Arc<str>),
}

/// What the router asks the control plane, from memory.
pub trait Gate: Send + Sync + 'static {
    /// The service whose instance has address `addr`, if one has.
    fn service_at(&self, addr: IpAddr) -> Option<Arc<str>>;
    /// What token `text` is to `service`.
    fn check_token(&self, text: &str, service: &str) -> TokenCheck;
    /// What token `text` is to publishing events (Allowed: it may publish to topics).
    fn check_publisher(&self, _text: &str) -> TokenCheck {
        TokenCheck::Invalid
    }
}

/// The answer to a request for a private service.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Served; `caller` (`service/NAME` or `token/NAME`) goes to the app in
    /// `X-Skiff-Caller`, and the Authorization field is dropped when it held the token.
    Allowed { caller: String, token_used: bool },
    /// 401: a token that is not one.
    Unauthenticated,
    /// 403: no way in.
    Forbidden(&'static str),
}

/// The token in an `Authorization: Bearer …` value (RFC 6750 §2.1), if it is one.
fn bearer(authorization: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether a request from `peer`, with `authorization` if it has one, may call `private`.
/// A calling service the rules name is let in whatever it sends; otherwise a token
/// decides.
pub(crate) fn decide(
    gate: Option<&dyn Gate>,
    private: &Private,
    peer: IpAddr,
    authorization: Option<&[u8]>,
) -> Verdict {
    let Some(gate) = gate else {
        return Verdict::Forbidden("the service is private and nothing may call it here");
    };
    if let Some(service) = gate.service_at(peer) {
        if private.callers.allow(&service) {
            return Verdict::Allowed {
                caller: format!("service/{service}"),
                token_used: false,
            };
        }
    }
    let Some(token) = authorization.and_then(bearer) else {
        return Verdict::Forbidden(
            "the service is private: send an invoker token (Authorization: Bearer …)",
        );
    };
    match gate.check_token(token, &private.service) {
        TokenCheck::Allowed(name) => Verdict::Allowed {
            caller: format!("token/{name}"),
            token_used: true,
        },
        TokenCheck::Denied => Verdict::Forbidden("the token may not invoke this service"),
        TokenCheck::Invalid => Verdict::Unauthenticated,
    }
}

/// Who publishes an event on the ingress: an instance of a service (by its address),
/// or a request with a token that may publish; `Err` with the status and why otherwise.
pub(crate) fn decide_publisher(
    gate: Option<&dyn Gate>,
    peer: IpAddr,
    authorization: Option<&[u8]>,
) -> Result<(String, bool), (u16, &'static str)> {
    let Some(gate) = gate else {
        return Err((403, "topics take no events here"));
    };
    if let Some(service) = gate.service_at(peer) {
        return Ok((format!("service/{service}"), false));
    }
    let Some(token) = authorization.and_then(bearer) else {
        return Err((
            403,
            "publish from a service's instance, or with a token that may publish \
             (Authorization: Bearer …)",
        ));
    };
    match gate.check_publisher(token) {
        TokenCheck::Allowed(name) => Ok((format!("token/{name}"), true)),
        TokenCheck::Denied => Err((403, "the token may not publish events")),
        TokenCheck::Invalid => Err((
            401,
            "the token is not valid (unknown, revoked or malformed)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeGate;

    impl Gate for FakeGate {
        fn service_at(&self, addr: IpAddr) -> Option<Arc<str>> {
            match addr.to_string().as_str() {
                "10.0.0.2" => Some("front".into()),
                "10.0.0.3" => Some("batch".into()),
                _ => None,
            }
        }
        fn check_token(&self, text: &str, service: &str) -> TokenCheck {
            match (text, service) {
                ("good", "db") => TokenCheck::Allowed("ci".into()),
                ("good", _) => TokenCheck::Denied,
                _ => TokenCheck::Invalid,
            }
        }
    }

    fn private(callers: Callers) -> Private {
        Private {
            service: "db".into(),
            callers,
        }
    }

    fn ask(p: &Private, peer: &str, auth: Option<&str>) -> Verdict {
        decide(
            Some(&FakeGate),
            p,
            peer.parse().unwrap(),
            auth.map(str::as_bytes),
        )
    }

    #[test]
    fn a_named_calling_service_is_let_in_and_named() {
        let p = private(Callers::Only(vec!["front".into()]));
        let allowed = |caller: &str, token_used| Verdict::Allowed {
            caller: caller.into(),
            token_used,
        };
        assert_eq!(ask(&p, "10.0.0.2", None), allowed("service/front", false));
        assert!(matches!(ask(&p, "10.0.0.3", None), Verdict::Forbidden(_)));
        // Another service with a token gets in as the token.
        assert_eq!(
            ask(&p, "10.0.0.3", Some("Bearer good")),
            allowed("token/ci", true)
        );
        let any = private(Callers::Any);
        assert_eq!(ask(&any, "10.0.0.3", None), allowed("service/batch", false));
        assert!(matches!(
            ask(&any, "127.0.0.1", None),
            Verdict::Forbidden(_)
        ));
    }

    #[test]
    fn tokens_decide_for_everyone_else() {
        let p = private(Callers::Only(Vec::new()));
        assert!(matches!(ask(&p, "127.0.0.1", None), Verdict::Forbidden(_)));
        assert_eq!(
            ask(&p, "127.0.0.1", Some("bearer  good ")),
            Verdict::Allowed {
                caller: "token/ci".into(),
                token_used: true
            }
        );
        assert_eq!(
            ask(&p, "127.0.0.1", Some("Bearer bad")),
            Verdict::Unauthenticated
        );
        // Not a bearer token at all: as if none were sent.
        assert!(matches!(
            ask(&p, "127.0.0.1", Some("Basic Z29vZA==")),
            Verdict::Forbidden(_)
        ));
        assert!(matches!(
            ask(&p, "127.0.0.1", Some("Bearer ")),
            Verdict::Forbidden(_)
        ));
        let other = Private {
            service: "web".into(),
            callers: Callers::Any,
        };
        assert!(matches!(
            ask(&other, "127.0.0.1", Some("Bearer good")),
            Verdict::Forbidden(_)
        ));
        assert!(matches!(
            decide(None, &p, "10.0.0.2".parse().unwrap(), Some(b"Bearer good"),),
            Verdict::Forbidden(_)
        ));
    }
}
