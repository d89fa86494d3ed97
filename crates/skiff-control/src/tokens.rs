//! API tokens: made for a role (and maybe some services), listed, revoked; and checked
//! ([`Control::authenticate`]) for a request that carries one. A token's text is shown
//! once, when made; the store keeps the hash of its secret.

use crate::documents::{TokenCreated, TokenInfo};
use crate::{Control, ControlError};
use skiff_core::{validate_label_name, validate_service_name, Grant, Role};
use skiff_store::{NewTokenRecord, TokenRecord};

/// What is asked of tokens.
#[derive(Debug)]
pub enum TokenCommand {
    Create {
        name: String,
        role: Role,
        /// Empty: every service.
        services: Vec<String>,
    },
    List,
    Revoke {
        name: String,
    },
}

/// What a token command answers.
#[derive(Debug)]
pub enum TokenAnswer {
    Created(TokenCreated),
    Tokens(Vec<TokenInfo>),
    Revoked(String),
}

/// Who a valid token is, and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's name.
    pub name: String,
    pub grant: Grant,
}

/// Why a request's token is not taken; deliberately vague to the caller (the API
/// answers 401 with one message), precise in the daemon's log.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is malformed")]
    Malformed,
    #[error("no token has id {0}")]
    Unknown(String),
    #[error("token {0} is revoked")]
    Revoked(String),
    #[error("token {0}'s secret does not match")]
    Mismatch(String),
}

fn info(t: &TokenRecord) -> TokenInfo {
    TokenInfo {
        name: t.name.clone(),
        role: t.role.clone(),
        services: t.services.clone(),
        created_at: t.created_at,
        revoked_at: t.revoked_at,
    }
}

impl Control {
    /// Carries out a token command; writes run one at a time with the other writes.
    pub async fn execute_token(&self, command: TokenCommand) -> Result<TokenAnswer, ControlError> {
        let _serial = match command {
            TokenCommand::List => None,
            _ => Some(self.write_lock.lock().await),
        };
        match command {
            TokenCommand::Create {
                name,
                role,
                services,
            } => {
                validate_label_name("token", &name)
                    .map_err(|e| ControlError::bad_field("name", e.to_string()))?;
                for s in &services {
                    validate_service_name(s)
                        .map_err(|e| ControlError::bad_field("services", e.to_string()))?;
                }
                let token = skiff_secrets::token::new_token();
                let record = NewTokenRecord {
                    id: token.id.clone(),
                    name: name.clone(),
                    role: role.to_string(),
                    services: services.clone(),
                    hash: token.hash,
                };
                if !self.db().create_token(&record)? {
                    return Err(ControlError::Conflict(format!(
                        "a token is named {name} already (revoked ones keep their names)"
                    )));
                }
                self.reload_gate_tokens();
                tracing::info!(token = %name, %role, "token created");
                Ok(TokenAnswer::Created(TokenCreated {
                    name,
                    role: role.to_string(),
                    services,
                    token: token.text.to_string(),
                }))
            }
            TokenCommand::List => Ok(TokenAnswer::Tokens(
                self.db().tokens()?.iter().map(info).collect(),
            )),
            TokenCommand::Revoke { name } => {
                if !self.db().revoke_token(&name)? {
                    return Err(ControlError::NotFound(format!(
                        "no token {name} to revoke (none by that name, or revoked already)"
                    )));
                }
                self.reload_gate_tokens();
                tracing::info!(token = %name, "token revoked");
                Ok(TokenAnswer::Revoked(name))
            }
        }
    }

    /// Gives the router's gate the tokens as they are now. Should reading them fail,
    /// the gate keeps none: a revoked token must not stay usable.
    fn reload_gate_tokens(&self) {
        let tokens = self.db().tokens().unwrap_or_else(|e| {
            tracing::error!("reading tokens for private services (none accepted until the next token write): {e}");
            Vec::new()
        });
        self.gate.load_tokens(tokens);
    }

    /// Who the token `text` belongs to, if it is a valid, unrevoked token.
    pub fn authenticate(&self, text: &str) -> Result<Identity, AuthError> {
        let (id, secret) = skiff_secrets::token::split_token(text).ok_or(AuthError::Malformed)?;
        let record = self
            .db()
            .token(id)
            .ok()
            .flatten()
            .ok_or_else(|| AuthError::Unknown(id.to_owned()))?;
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked(record.name));
        }
        if !skiff_secrets::token::secret_matches(secret, &record.hash) {
            return Err(AuthError::Mismatch(record.name));
        }
        let role = record
            .role
            .parse()
            .map_err(|_| AuthError::Unknown(id.to_owned()))?;
        Ok(Identity {
            name: record.name,
            grant: Grant {
                role,
                services: record.services,
            },
        })
    }
}
