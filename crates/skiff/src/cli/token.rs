//! `skiff token`: API tokens for the daemon's TCP API (with `--api-listen`) and private
//! services. A token is printed once, when made.

use super::client::Client;
use super::output::{self, Format};
use clap::Subcommand;
use hyper::Method;
use skiff_control::documents::{TokenCreated, TokenInfo, TokenRequest};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token (printed this once: keep it).
    Create {
        /// Its name (a-z, 0-9 and '-').
        name: String,
        /// admin (everything), developer (deploy, traffic, logs; secrets by reference
        /// only), viewer (read), invoker (call private services).
        #[arg(long)]
        role: String,
        /// Limit it to this service (repeatable); without, every service.
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
    },
    /// List tokens (never the tokens themselves).
    Ls,
    /// Revoke a token: it is refused from now on.
    Revoke { name: String },
}

pub fn run(client: &Client, format: Format, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            role,
            services,
        } => {
            let request = TokenRequest {
                name,
                role,
                services,
            };
            let made: TokenCreated = client.call(
                Method::POST,
                "/v1/tokens",
                Some(serde_json::to_value(&request)?),
            )?;
            if format == Format::Json {
                output::json(&serde_json::to_value(&made)?);
            } else {
                println!("{}", made.token);
                eprintln!(
                    "token {} ({}) made: it is shown this once; skiff keeps only its hash",
                    made.name, made.role
                );
            }
            Ok(())
        }
        TokenCommand::Ls => {
            let list: Vec<TokenInfo> = client.call(Method::GET, "/v1/tokens", None)?;
            if format == Format::Json {
                output::json(&serde_json::to_value(&list)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.role.clone(),
                        if t.services.is_empty() {
                            "*".into()
                        } else {
                            t.services.join(",")
                        },
                        super::service::ago(t.created_at),
                        t.revoked_at.map_or("-".into(), super::service::ago),
                    ]
                })
                .collect();
            output::table(&["NAME", "ROLE", "SERVICES", "CREATED", "REVOKED"], &rows);
            Ok(())
        }
        TokenCommand::Revoke { name } => {
            let _: serde_json::Value =
                client.call(Method::DELETE, &format!("/v1/tokens/{name}"), None)?;
            if format == Format::Json {
                output::json(&serde_json::json!({ "revoked": name }));
            } else {
                println!("revoked token {name}");
            }
            Ok(())
        }
    }
}
