//! Who may do what through the API: a token's role and the services it is limited to,
//! and what each kind of request needs. Pure rules: the API maps a request to an
//! [`ApiAction`] and asks.

use std::fmt;
use std::str::FromStr;

/// A token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Deploys, moves traffic, reads logs; uses secrets by reference, never sees or
    /// writes their values.
    Developer,
    /// Reads.
    Viewer,
    /// Calls private services; nothing of the API.
    Invoker,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "developer" => Ok(Role::Developer),
            "viewer" => Ok(Role::Viewer),
            "invoker" => Ok(Role::Invoker),
            other => Err(format!(
                "role {other:?} is none of admin, developer, viewer and invoker"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
            Role::Invoker => "invoker",
        })
    }
}

/// What a request to the API does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiAction {
    /// Reads services (or lists them).
    Read,
    /// Deploys, moves traffic, rolls back, removes.
    Deploy,
    /// Reads logs.
    ReadLogs,
    /// Lists secrets and config maps, their versions and keys (never values).
    ReadSecretNames,
    /// Makes, versions, disables or removes secrets and config maps (values go in).
    WriteSecrets,
    /// Makes, lists or revokes tokens.
    ManageTokens,
    /// Reads the audit log.
    ReadAudit,
    /// Makes, changes or removes schedules, topics and subscriptions.
    ManageEvents,
    /// Publishes an event to a topic.
    Publish,
}

/// What a token grants: a role, over every service or only these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    /// Empty: every service.
    pub services: Vec<String>,
}

impl Grant {
    /// Whether `action` on `service` (`None`: no one service, as a list) is allowed.
    pub fn allows(&self, action: ApiAction, service: Option<&str>) -> bool {
        let by_role = match self.role {
            Role::Admin => true,
            Role::Developer => matches!(
                action,
                ApiAction::Read
                    | ApiAction::Deploy
                    | ApiAction::ReadLogs
                    | ApiAction::ReadSecretNames
                    | ApiAction::ManageEvents
                    | ApiAction::Publish
            ),
            Role::Viewer => matches!(
                action,
                ApiAction::Read | ApiAction::ReadLogs | ApiAction::ReadSecretNames
            ),
            // Publishing an event is calling whatever subscribes to it.
            Role::Invoker => action == ApiAction::Publish,
        };
        by_role && service.is_none_or(|s| self.covers(s))
    }

    /// Whether it may call service `service` when it is private: invokers, and the
    /// roles that could deploy the service anyway; a viewer reads, it does not call.
    pub fn may_invoke(&self, service: &str) -> bool {
        self.role != Role::Viewer && self.covers(service)
    }

    fn covers(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|s| s == service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: &str, services: &[&str]) -> Grant {
        Grant {
            role: role.parse().unwrap(),
            services: services.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn roles_allow_what_they_say() {
        use ApiAction::*;
        let all = [
            Read,
            Deploy,
            ReadLogs,
            ReadSecretNames,
            WriteSecrets,
            ManageTokens,
            ReadAudit,
            ManageEvents,
            Publish,
        ];
        let allowed = |g: &Grant| {
            all.iter()
                .filter(|a| g.allows(**a, None))
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(allowed(&grant("admin", &[])), all);
        assert_eq!(
            allowed(&grant("developer", &[])),
            [
                Read,
                Deploy,
                ReadLogs,
                ReadSecretNames,
                ManageEvents,
                Publish
            ]
        );
        assert_eq!(
            allowed(&grant("viewer", &[])),
            [Read, ReadLogs, ReadSecretNames]
        );
        assert_eq!(allowed(&grant("invoker", &[])), [Publish]);
        assert!("root".parse::<Role>().is_err());
        assert_eq!(Role::Developer.to_string(), "developer");
    }

    #[test]
    fn a_grant_for_some_services_covers_those_only() {
        let a_only = grant("developer", &["a"]);
        assert!(a_only.allows(ApiAction::ReadLogs, Some("a")));
        assert!(!a_only.allows(ApiAction::ReadLogs, Some("b")));
        assert!(!a_only.allows(ApiAction::Deploy, Some("b")));
        assert!(a_only.may_invoke("a") && !a_only.may_invoke("b"));
        let invoker = grant("invoker", &["a"]);
        assert!(invoker.may_invoke("a"));
        assert!(!grant("viewer", &[]).may_invoke("a"));
        assert!(grant("admin", &[]).may_invoke("a"));
        assert!(!invoker.allows(ApiAction::Read, Some("a")));
    }
}
