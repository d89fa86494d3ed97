//! The nftables text of the service network: the table a daemon owns for its subnet, and
//! the set elements that carry each instance's egress policy. Pure text, tested without
//! root; `network.rs` feeds it to `nft`.
//!
//! The table judges only packets from or to its own subnet, so daemons with disjoint
//! subnets (and whatever else uses nftables on the host) never step on each other.

use skiff_core::{Destination, EgressMode, EgressRule};
use std::fmt::Write;
use std::net::Ipv4Addr;

/// Destinations no rule opens: this host's loopback, link-local (cloud metadata lives
/// there), multicast and reserved space. The instances' own subnet is added per table.
const ALWAYS_CLOSED: &[&str] = &["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"];

/// Private destinations, reached only when a rule allows them (the VPC connector's job
/// on Cloud Run): RFC 1918, shared address space (RFC 6598), benchmarking (RFC 2544) and
/// the IETF protocol block.
const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
];

/// Where one daemon's network is and what it serves there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// The table's name (one per subnet).
    pub name: String,
    /// The instances' subnet.
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// Where instances find skiff's DNS (port 53) and other services (port 80).
    pub service_addr: Ipv4Addr,
    /// `host.skiff.internal`.
    pub host_addr: Ipv4Addr,
    /// The ports the DNS server and the service router really listen on.
    pub dns_port: u16,
    pub http_port: u16,
}

/// The table, replaced in one transaction (declared, deleted, created again), so a
/// table left by a daemon that died goes with no window where nothing stands.
pub fn table(t: &TableSpec) -> String {
    let net = format!("{}/{}", t.subnet, t.prefix);
    let (svc, host) = (t.service_addr, t.host_addr);
    let (dns, http) = (t.dns_port, t.http_port);
    let closed = ALWAYS_CLOSED.join(", ");
    let private = PRIVATE.join(", ");
    let name = &t.name;
    format!(
        r#"table ip {name}
delete table ip {name}
table ip {name} {{
  set deny {{ type ipv4_addr; }}
  set allow {{ type ipv4_addr . ipv4_addr . inet_service; flags interval; }}
  set host_ports {{ type ipv4_addr . inet_service; }}
  chain guard {{
    type filter hook prerouting priority raw; policy accept;
    ip saddr {net} iifname != "skf*" iif != lo drop
    iifname "skf*" fib saddr . iif oif missing drop
  }}
  chain to_skiff {{
    type nat hook prerouting priority dstnat; policy accept;
    ip saddr {net} ip daddr {svc} udp dport 53 dnat to {svc}:{dns}
    ip saddr {net} ip daddr {svc} tcp dport 53 dnat to {svc}:{dns}
    ip saddr {net} ip daddr {svc} tcp dport 80 dnat to {svc}:{http}
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    ip saddr {net} ct state established,related accept
    ip saddr {net} ip daddr {svc} udp dport {dns} accept
    ip saddr {net} ip daddr {svc} tcp dport {{ {dns}, {http} }} accept
    ip saddr {net} ip daddr {host} meta l4proto {{ tcp, udp }} ip saddr . th dport @host_ports accept
    ip saddr {net} meta l4proto tcp reject with tcp reset
    ip saddr {net} reject with icmp type admin-prohibited
    ip daddr {net} iif != lo drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ip daddr {net} ct state established,related accept
    ip daddr {net} drop
    ip saddr {net} jump egress
  }}
  chain egress {{
    ct state established,related accept
    ip daddr {{ {net}, {closed} }} reject with icmp type admin-prohibited
    meta l4proto {{ tcp, udp }} ip saddr . ip daddr . th dport @allow accept
    ip saddr @deny reject with icmp type admin-prohibited
    ip daddr {{ {private} }} reject with icmp type admin-prohibited
    accept
  }}
  chain outbound {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {net} oifname != "skf*" oif != lo masquerade
  }}
}}
"#
    )
}

/// The set elements that carry one instance's policy (`set name`, element text); none
/// for the default (public egress, no rules).
pub fn elements(
    instance: Ipv4Addr,
    mode: EgressMode,
    rules: &[EgressRule],
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if mode == EgressMode::None {
        out.push(("deny", instance.to_string()));
    }
    for rule in rules {
        let ports = rule
            .port
            .map_or_else(|| "0-65535".to_owned(), |p| p.to_string());
        match rule.dest {
            Destination::Host => out.push(("host_ports", format!("{instance} . {ports}"))),
            Destination::Net { addr, prefix } => {
                out.push(("allow", format!("{instance} . {addr}/{prefix} . {ports}")))
            }
        }
    }
    out
}

/// One nft transaction that deletes `old` elements and adds `new` ones.
pub fn replace_elements(
    table: &str,
    old: &[(&'static str, String)],
    new: &[(&'static str, String)],
) -> String {
    let mut script = String::new();
    for (verb, list) in [("delete", old), ("add", new)] {
        for (set, element) in list {
            // Writing into a String cannot fail.
            let _ = writeln!(script, "{verb} element ip {table} {set} {{ {element} }}");
        }
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TableSpec {
        TableSpec {
            name: "skiff_0a590000_16".into(),
            subnet: Ipv4Addr::new(10, 89, 0, 0),
            prefix: 16,
            service_addr: Ipv4Addr::new(10, 89, 0, 1),
            host_addr: Ipv4Addr::new(10, 89, 0, 2),
            dns_port: 40053,
            http_port: 40080,
        }
    }

    #[test]
    fn the_table_closes_before_it_allows_and_allows_before_it_denies() {
        let text = table(&spec());
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing in\n{text}"))
        };
        // Other instances, loopback and link-local come before any rule.
        let closed = at("ip daddr { 10.89.0.0/16, 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16");
        let allow = at("@allow accept");
        let deny = at("ip saddr @deny reject");
        let private = at("ip daddr { 10.0.0.0/8");
        assert!(closed < allow && allow < deny && deny < private);
        assert!(text.contains("dnat to 10.89.0.1:40053"));
        assert!(text.contains("tcp dport 80 dnat to 10.89.0.1:40080"));
        assert!(text.contains(
            "ip daddr 10.89.0.2 meta l4proto { tcp, udp } ip saddr . th dport @host_ports accept"
        ));
        assert!(text.starts_with("table ip skiff_0a590000_16\ndelete table ip skiff_0a590000_16\n"));
    }

    #[test]
    fn a_policy_becomes_set_elements() {
        let inst = Ipv4Addr::new(10, 89, 0, 6);
        assert!(elements(inst, EgressMode::All, &[]).is_empty());
        let rules =
            skiff_core::parse_egress_rules("10.0.0.0/8:5432,host:6379,192.168.1.4").unwrap();
        let e = elements(inst, EgressMode::None, &rules);
        assert_eq!(
            e,
            [
                ("deny", "10.89.0.6".to_owned()),
                ("allow", "10.89.0.6 . 10.0.0.0/8 . 5432".to_owned()),
                ("host_ports", "10.89.0.6 . 6379".to_owned()),
                ("allow", "10.89.0.6 . 192.168.1.4/32 . 0-65535".to_owned()),
            ]
        );
        let script = replace_elements("t", &e[..1], &e[1..2]);
        assert_eq!(
            script,
            "delete element ip t deny { 10.89.0.6 }\nadd element ip t allow { 10.89.0.6 . 10.0.0.0/8 . 5432 }\n"
        );
    }
}
