//! The daemon's service network: the subnet its instances live in, what it sets up on the
//! host for them (skiff's addresses on loopback, IPv4 forwarding, an nftables table
//! with NAT and the egress firewall, per-instance policies as set elements), and the DNS
//! server that answers for services and `host.skiff.internal`.
//!
//! It must not know services' specs beyond their egress policy, nor start instances:
//! the runtime asks it for a policy, the daemon wires the DNS to the router's routes.
#![forbid(unsafe_code)]

pub mod dns;
mod firewall;
mod network;

pub use dns::{DnsConfig, DnsServer, ServiceLookup};
pub use network::{ServiceNetwork, Subnet, DEFAULT_SUBNET};

/// Errors of the service network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A subnet that is malformed or taken.
    #[error("instance subnet {0}")]
    Subnet(String),
    /// A change to the host (links, nftables, sysctls) failed.
    #[error("{0}")]
    Host(String),
}
