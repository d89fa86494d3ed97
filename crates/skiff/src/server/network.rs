//! The daemon's side of the service network: sets it up on the host, serves DNS and the
//! router for calls between services on skiff's address, then installs the firewall that
//! sends instances' port 53 and 80 there.

use anyhow::Context;
use skiff_net::{DnsConfig, DnsServer, ServiceNetwork, Subnet};
use skiff_router::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Where the lock files of subnets in use live.
const LOCK_DIR: &str = "/run/skiff";

/// Sets up the network and starts its servers; the future resolves once the internal
/// router has stopped (after `stop`).
pub async fn start(
    subnet: &Subnet,
    upstreams: &[SocketAddr],
    router: &Router,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(Arc<ServiceNetwork>, tokio::sync::oneshot::Receiver<()>)> {
    let network = ServiceNetwork::create(*subnet, std::path::Path::new(LOCK_DIR))
        .with_context(|| format!("setting up the instance network {subnet}"))?;
    let network = Arc::new(network);
    let upstreams = if upstreams.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        skiff_net::dns::nameservers(&text)
    } else {
        upstreams.to_vec()
    };
    if upstreams.is_empty() {
        tracing::warn!(
            "no DNS upstream (none given, none in /etc/resolv.conf): instances resolve \
             only skiff's own names"
        );
    }
    let lookup_router = router.clone();
    let topic_router = router.clone();
    let dns = DnsServer::bind(
        subnet.service_addr(),
        DnsConfig {
            service_addr: subnet.service_addr(),
            host_addr: subnet.host_addr(),
            upstreams,
            services: Arc::new(move |label| lookup_router.route(label).is_some()),
            topics: Arc::new(move |label| topic_router.has_topic(label)),
        },
    )
    .await
    .with_context(|| format!("listening for DNS on {}", subnet.service_addr()))?;
    let dns_port = dns.port();
    tokio::spawn(dns.serve(stop.clone()));
    let internal = SocketAddr::from((subnet.service_addr(), 0));
    let (internal_addr, internal_done) = router
        .clone()
        .serve_threads(internal, 1, stop.clone())
        .with_context(|| format!("listening for calls between services on {internal}"))?;
    network
        .install_firewall(dns_port, internal_addr.port())
        .context("installing the instance firewall")?;
    Ok((network, internal_done))
}
