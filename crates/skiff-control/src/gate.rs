//! What the router asks when a request comes for a private service: which service an
//! instance address belongs to, and what a token may invoke. Both are answered from
//! memory: the tokens are loaded from the store at start and again after every token
//! write, and the addresses are set as instances are made and forgotten as they end, so
//! the hot path never waits on the database. It must not decide who gets in; the
//! router's `access` module does, from these answers.

use skiff_core::Grant;
use skiff_router::{Gate, TokenCheck};
use skiff_store::TokenRecord;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// A token that is valid now.
struct Token {
    name: Arc<str>,
    hash: Vec<u8>,
    grant: Grant,
}

/// Instance addresses and the services they belong to.
#[derive(Default)]
struct Addresses {
    /// The service, and the instance that has the address.
    service_at: HashMap<IpAddr, (Arc<str>, String)>,
    of_instance: HashMap<String, IpAddr>,
}

/// The control plane's answers to the router.
#[derive(Default)]
pub struct ServiceGate {
    /// Valid tokens by id; replaced whole when tokens change.
    tokens: RwLock<Arc<HashMap<String, Token>>>,
    addresses: RwLock<Addresses>,
}

impl ServiceGate {
    /// Takes the valid tokens among `records` (revoked ones and ones of unknown roles
    /// are left out), in place of the ones it had.
    pub(crate) fn load_tokens(&self, records: Vec<TokenRecord>) {
        let tokens = records
            .into_iter()
            .filter(|t| t.revoked_at.is_none())
            .filter_map(|t| {
                let role = t.role.parse().ok()?;
                let token = Token {
                    name: t.name.into(),
                    hash: t.hash,
                    grant: Grant {
                        role,
                        services: t.services,
                    },
                };
                Some((t.id, token))
            })
            .collect();
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
    }

    /// Instance `id` of `service` has address `addr` (which no live instance has).
    pub(crate) fn instance_at(&self, addr: IpAddr, id: &str, service: &str) {
        let mut a = self.addresses.write().unwrap_or_else(|p| p.into_inner());
        a.service_at.insert(addr, (service.into(), id.to_owned()));
        a.of_instance.insert(id.to_owned(), addr);
    }

    /// Instance `id` is gone; its address may go to another.
    pub(crate) fn forget_instance(&self, id: &str) {
        let mut a = self.addresses.write().unwrap_or_else(|p| p.into_inner());
        let Some(addr) = a.of_instance.remove(id) else {
            return;
        };
        // Unless another instance has the address by now.
        if a.service_at
            .get(&addr)
            .is_some_and(|(_, holder)| holder == id)
        {
            a.service_at.remove(&addr);
        }
    }
}

impl Gate for ServiceGate {
    fn service_at(&self, addr: IpAddr) -> Option<Arc<str>> {
        let a = self.addresses.read().unwrap_or_else(|p| p.into_inner());
        a.service_at
            .get(&addr)
            .map(|(service, _)| Arc::clone(service))
    }

    fn check_token(&self, text: &str, service: &str) -> TokenCheck {
        self.check(text, |grant| grant.may_invoke(service))
    }

    fn check_publisher(&self, text: &str) -> TokenCheck {
        self.check(text, |grant| {
            grant.allows(skiff_core::ApiAction::Publish, None)
        })
    }
}

impl ServiceGate {
    /// What token `text` is, given what `allowed` says of its grant.
    fn check(&self, text: &str, allowed: impl Fn(&skiff_core::Grant) -> bool) -> TokenCheck {
        let Some((id, secret)) = skiff_secrets::token::split_token(text) else {
            return TokenCheck::Invalid;
        };
        let tokens = Arc::clone(&self.tokens.read().unwrap_or_else(|p| p.into_inner()));
        match tokens.get(id) {
            Some(t) if skiff_secrets::token::secret_matches(secret, &t.hash) => {
                if allowed(&t.grant) {
                    TokenCheck::Allowed(Arc::clone(&t.name))
                } else {
                    TokenCheck::Denied
                }
            }
            _ => TokenCheck::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, role: &str, services: &[&str], revoked: bool) -> (String, TokenRecord) {
        let t = skiff_secrets::token::new_token();
        let record = TokenRecord {
            id: t.id,
            name: name.into(),
            role: role.into(),
            services: services.iter().map(|s| s.to_string()).collect(),
            hash: t.hash,
            created_at: 0,
            revoked_at: revoked.then_some(1),
        };
        (t.text.to_string(), record)
    }

    #[test]
    fn tokens_are_checked_from_memory_as_last_loaded() {
        let gate = ServiceGate::default();
        let (ci, ci_rec) = record("ci", "invoker", &["db"], false);
        let (old, old_rec) = record("old", "admin", &[], true);
        let (viewer, viewer_rec) = record("v", "viewer", &[], false);
        gate.load_tokens(vec![ci_rec.clone(), old_rec, viewer_rec]);
        assert_eq!(
            gate.check_token(&ci, "db"),
            TokenCheck::Allowed("ci".into())
        );
        assert_eq!(gate.check_token(&ci, "web"), TokenCheck::Denied);
        assert_eq!(gate.check_token(&viewer, "db"), TokenCheck::Denied);
        assert_eq!(gate.check_token(&old, "db"), TokenCheck::Invalid);
        assert_eq!(gate.check_token("skiff_nope", "db"), TokenCheck::Invalid);
        // Right id, wrong secret.
        let forged = format!(
            "{}{}",
            &ci[..ci.len() - 1],
            if ci.ends_with('0') { '1' } else { '0' }
        );
        assert_eq!(gate.check_token(&forged, "db"), TokenCheck::Invalid);
        // Revoked since: gone at the next load.
        let mut revoked = ci_rec;
        revoked.revoked_at = Some(2);
        gate.load_tokens(vec![revoked]);
        assert_eq!(gate.check_token(&ci, "db"), TokenCheck::Invalid);
    }

    #[test]
    fn an_address_names_its_instances_service_until_the_instance_ends() {
        let gate = ServiceGate::default();
        let addr: IpAddr = "10.89.0.6".parse().unwrap();
        gate.instance_at(addr, "i1", "front");
        assert_eq!(gate.service_at(addr).as_deref(), Some("front"));
        gate.forget_instance("i1");
        assert_eq!(gate.service_at(addr), None);
        gate.instance_at(addr, "i2", "batch");
        gate.forget_instance("i1");
        assert_eq!(gate.service_at(addr).as_deref(), Some("batch"));
        // An address taken over before the last holder was forgotten stays the new one's.
        gate.instance_at(addr, "i3", "web");
        gate.forget_instance("i2");
        assert_eq!(gate.service_at(addr).as_deref(), Some("web"));
    }
}
