//! Where a service's instances may connect to outside skiff: the egress policy, as Cloud
//! Run's default internet egress plus a VPC connector's private ranges.
//!
//! `all` (the default) reaches public addresses through the host's NAT; `none` reaches
//! nothing outside. Either way the instance always reaches skiff's own DNS and other
//! services by name, and never the host's loopback, the host's other addresses, other
//! instances or link-local addresses. Private destinations (RFC 1918 and the like) and
//! ports of the host (`host.skiff.internal`) are reached only when allowed by a rule.
//!
//! This module is pure data: the daemon turns a policy into firewall rules.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The name instances reach the host by.
pub const HOST_NAME: &str = "host.skiff.internal";

/// Whether instances reach public addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// Public addresses through NAT, and what the rules allow.
    #[default]
    All,
    /// Only what the rules allow.
    None,
}

impl EgressMode {
    pub fn is_default(&self) -> bool {
        *self == EgressMode::All
    }
}

impl FromStr for EgressMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(EgressMode::All),
            "none" => Ok(EgressMode::None),
            _ => Err(format!("{s:?} is not an egress setting: want all or none")),
        }
    }
}

impl fmt::Display for EgressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EgressMode::All => "all",
            EgressMode::None => "none",
        })
    }
}

/// A destination a rule opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// An IPv4 network (a single address is a /32).
    Net { addr: Ipv4Addr, prefix: u8 },
    /// The host, as `host.skiff.internal`.
    Host,
}

/// One allowed destination, with a port (TCP and UDP) or every port: `CIDR[:PORT]`, or
/// `host.skiff.internal:PORT` (the host needs a port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressRule {
    pub dest: Destination,
    pub port: Option<u16>,
}

impl FromStr for EgressRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "{s:?} is not CIDR[:PORT] or {HOST_NAME}:PORT: {why}"
            ))
        };
        let (target, port) = match s.rsplit_once(':') {
            Some((t, p)) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return bad("the port must be 1-65535"),
                Ok(n) => (t, Some(n)),
            },
            None => (s, None),
        };
        if target == HOST_NAME || target == "host" {
            if port.is_none() {
                return bad("name the host's port; the host's other ports stay closed");
            }
            return Ok(EgressRule {
                dest: Destination::Host,
                port,
            });
        }
        let (addr, prefix) = match target.split_once('/') {
            Some((a, p)) => match p.parse::<u8>() {
                Ok(n) if n <= 32 => (a, n),
                _ => return bad("the prefix length must be 0-32"),
            },
            None => (target, 32),
        };
        let Ok(addr) = addr.parse::<Ipv4Addr>() else {
            return bad("not an IPv4 address");
        };
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            return bad("host bits are set after the prefix");
        }
        Ok(EgressRule {
            dest: Destination::Net { addr, prefix },
            port,
        })
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dest {
            Destination::Host => f.write_str(HOST_NAME)?,
            Destination::Net { addr, prefix: 32 } => write!(f, "{addr}")?,
            Destination::Net { addr, prefix } => write!(f, "{addr}/{prefix}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

impl Serialize for EgressRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EgressRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Refuses rules that could never work: loopback (an instance's 127.0.0.1 is its own) and
/// link-local addresses (cloud metadata servers live there) stay closed whatever is asked.
pub(crate) fn check_rules(rules: &[EgressRule]) -> Result<(), String> {
    for rule in rules {
        let Destination::Net { addr, prefix } = rule.dest else {
            continue;
        };
        let overlaps = |net: Ipv4Addr, len: u8| {
            let common = prefix.min(len);
            let mask = u32::MAX.checked_shl(32 - u32::from(common)).unwrap_or(0);
            u32::from(addr) & mask == u32::from(net) & mask
        };
        if prefix > 0 && overlaps(Ipv4Addr::new(127, 0, 0, 0), 8) {
            return Err(format!(
                "{rule}: the host's loopback is never reachable; allow {HOST_NAME}:PORT \
                 and have the host's service listen beyond 127.0.0.1"
            ));
        }
        if prefix > 0 && overlaps(Ipv4Addr::new(169, 254, 0, 0), 16) {
            return Err(format!("{rule}: link-local addresses are never reachable"));
        }
    }
    Ok(())
}

/// Parses a comma-separated list of rules (the CLI's and the annotation's form); empty
/// text is no rules.
pub fn parse_egress_rules(text: &str) -> Result<Vec<EgressRule>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// The rules as the CLI and the annotation write them.
pub fn egress_rules_text(rules: &[EgressRule]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print_back() {
        for text in [
            "10.0.0.0/8",
            "192.168.1.10:5432",
            "172.16.0.0/12:6379",
            "host.skiff.internal:5432",
            "0.0.0.0/0:53",
        ] {
            let rule: EgressRule = text.parse().unwrap();
            assert_eq!(rule.to_string(), text);
        }
        assert_eq!(
            "host:80".parse::<EgressRule>().unwrap().dest,
            Destination::Host
        );
        assert_eq!(
            "192.168.1.10/32".parse::<EgressRule>().unwrap().to_string(),
            "192.168.1.10"
        );
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, why) in [
            ("host.skiff.internal", "name the host's port"),
            ("10.0.0.1/8", "host bits"),
            ("10.0.0.0/33", "prefix length"),
            ("10.0.0.0:0", "1-65535"),
            ("10.0.0.0:http", "1-65535"),
            ("db.example.com:5432", "not an IPv4 address"),
            ("::1", "not an IPv4 address"),
        ] {
            let err = text.parse::<EgressRule>().unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn loopback_and_link_local_stay_closed() {
        for text in ["127.0.0.1:5432", "127.0.0.0/8", "169.254.169.254:80"] {
            let rules = parse_egress_rules(text).unwrap();
            assert!(check_rules(&rules).is_err(), "{text} accepted");
        }
        // The whole address space is a fine rule: the closed ranges stay closed in it.
        assert!(check_rules(&parse_egress_rules("0.0.0.0/0:443,10.0.0.0/8").unwrap()).is_ok());
    }

    #[test]
    fn lists_are_comma_separated() {
        let rules = parse_egress_rules("10.0.0.0/8:5432, host:6379,").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            egress_rules_text(&rules),
            "10.0.0.0/8:5432,host.skiff.internal:6379"
        );
        assert!(parse_egress_rules("").unwrap().is_empty());
        assert_eq!("none".parse::<EgressMode>().unwrap(), EgressMode::None);
        assert!("private".parse::<EgressMode>().is_err());
    }
}
