//! `skiff invocations NAME`: a service's async invocations, newest first: state,
//! attempts, the last outcome; never their bodies.

use super::client::Client;
use super::output::{self, Format};
use skiff_control::documents::{InvocationInfo, RedriveRequest, Redriven};

/// Sends `ids` (or every dead one) of `service` again.
pub fn redrive(
    client: &Client,
    format: Format,
    service: &str,
    ids: Vec<String>,
) -> anyhow::Result<()> {
    let body = serde_json::to_value(RedriveRequest { ids })?;
    let done: Redriven = client.call(
        hyper::Method::POST,
        &format!("/v1/services/{service}/invocations/redrive"),
        Some(body),
    )?;
    match format {
        Format::Json => output::json(&serde_json::to_value(&done)?),
        Format::Table => println!(
            "sent {} dead invocation(s) of {service} again{}",
            done.redriven.len(),
            if done.redriven.is_empty() { "" } else { ":" }
        ),
    }
    if format == Format::Table {
        for id in &done.redriven {
            println!("  {id}");
        }
    }
    Ok(())
}

/// How a delivery's last attempt ended, for a table: why it failed, else its status.
pub fn last_outcome(i: &InvocationInfo) -> String {
    match (&i.last_status, &i.last_error) {
        (_, Some(error)) => error.clone(),
        (Some(status), None) => status.to_string(),
        (None, None) => String::new(),
    }
}

pub fn run(client: &Client, format: Format, service: &str, limit: u32) -> anyhow::Result<()> {
    let list: Vec<InvocationInfo> = client.call(
        hyper::Method::GET,
        &format!("/v1/services/{service}/invocations?limit={limit}"),
        None,
    )?;
    if format == Format::Json {
        output::json(&serde_json::to_value(&list)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            let last = last_outcome(i);
            vec![
                i.id.clone(),
                i.state.to_uppercase(),
                format!("{} {}", i.method, i.target),
                i.attempts.to_string(),
                skiff_sandbox::rfc3339_ms(i.created_ms),
                last,
            ]
        })
        .collect();
    output::table(
        &["ID", "STATE", "REQUEST", "ATTEMPTS", "CREATED", "LAST"],
        &rows,
    );
    Ok(())
}
