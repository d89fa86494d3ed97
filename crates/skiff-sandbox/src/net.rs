//! Per-instance networking: a veth pair whose host end (`skiff<slot>`) gets the first
//! address of a /30 and whose sandbox end (`eth0`) the second. Instances have no route
//! beyond their /30, and their loopback is their own, so the host's 127.0.0.1 services
//! are out of reach. An nftables table (`inet skiff`) drops everything instances send to
//! the host itself, or try to route through it, except replies on connections the host
//! opened: a host service listening on 0.0.0.0 is as unreachable as one on 127.0.0.1.
//! When the sandbox's network namespace dies, the kernel deletes the pair: nothing to
//! clean up by hand.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The default instance subnet (a /16 cut into /30s).
pub const DEFAULT_SUBNET: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 0);
/// The name prefix of routed slots' host ends (the daemon's firewall matches on it).
pub const ROUTED_PREFIX: &str = "skf";
/// How many /30 slots a /16 holds.
pub const SLOTS: u32 = 1 << 14;

/// One instance's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkSlot {
    /// Slot number, unique among running instances.
    pub slot: u32,
    /// Base of the network the slots are cut from.
    pub subnet: Ipv4Addr,
    /// A service instance of the daemon's network: its link is named after its address
    /// (so daemons with disjoint subnets never clash), and it routes everything through
    /// the host end, where the daemon's firewall decides. Otherwise (`skiff run`) it has
    /// no route beyond its /30.
    pub routed: bool,
}

impl NetworkSlot {
    /// Each slot is a /30: network, host end, instance, broadcast.
    pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 252);

    /// Slot `slot` of the default subnet.
    pub fn new(slot: u32) -> Self {
        NetworkSlot {
            slot,
            subnet: DEFAULT_SUBNET,
            routed: false,
        }
    }

    /// Slot `slot` of a daemon's service network based at `subnet`.
    pub fn routed(subnet: Ipv4Addr, slot: u32) -> Self {
        NetworkSlot {
            slot,
            subnet,
            routed: true,
        }
    }

    fn base(&self) -> u32 {
        u32::from(self.subnet) + self.slot * 4
    }

    /// The host end's address.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 1)
    }

    /// The instance's address (where its server listens).
    pub fn instance_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 2)
    }

    /// The host end's interface name: `skiff<slot>`, or for a routed slot `skf` and the
    /// slot's network address in hex (11 characters, within IFNAMSIZ).
    pub fn host_ifname(&self) -> String {
        if self.routed {
            format!("{ROUTED_PREFIX}{:08x}", self.base())
        } else {
            format!("skiff{}", self.slot)
        }
    }
}

/// The host firewall, replaced atomically and idempotently (declare, delete, re-create in
/// one nft transaction).
const FIREWALL: &str = r#"table inet skiff
delete table inet skiff
table inet skiff {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "skiff*" ct state established,related accept
    iifname "skiff*" drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "skiff*" drop
    oifname "skiff*" drop
  }
}
"#;

/// Starts `program args…` with `script` on its stdin (`ip -batch -`, `nft -f -`).
fn spawn_script(
    program: &str,
    args: &[&str],
    script: &str,
) -> std::io::Result<std::process::Child> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("running {program}: {e}")))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())?;
    Ok(child)
}

/// Waits for a [`spawn_script`] child; its stderr becomes the error.
fn wait_script(program: &str, child: std::process::Child) -> std::io::Result<()> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A script still running; waited for on drop, so an early return never leaves a zombie.
pub struct PendingScript {
    program: &'static str,
    child: Option<std::process::Child>,
}

impl PendingScript {
    /// Waits for it and reports its verdict.
    pub fn wait(mut self) -> std::io::Result<()> {
        wait_script(self.program, self.child.take().expect("waited once"))
    }
}

impl Drop for PendingScript {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

/// Starts installing the host firewall that keeps instances from reaching host services;
/// the caller waits for it once the sandbox is set up, so the two overlap.
pub fn spawn_host_firewall() -> std::io::Result<PendingScript> {
    Ok(PendingScript {
        program: "nft",
        child: Some(spawn_script("nft", &["-f", "-"], FIREWALL)?),
    })
}

/// Creates the veth pair with its peer (`eth0`) inside the network namespace of `pid`,
/// and gives the host end its address. A pair left by an instance whose namespace is
/// somehow still alive makes this fail ("File exists"): reported, not papered over.
pub fn create_veth(slot: &NetworkSlot, pid: i32) -> std::io::Result<()> {
    let ifname = slot.host_ifname();
    crate::netlink::create_veth(&ifname, "eth0", pid)
        .map_err(|e| std::io::Error::new(e.kind(), format!("creating veth {ifname}: {e}")))?;
    crate::netlink::configure(&ifname, Some((slot.host_addr(), NetworkSlot::NETMASK)))
        .map_err(|e| std::io::Error::new(e.kind(), format!("configuring {ifname}: {e}")))
}

/// Waits for the kernel to tear down the pair after the namespace died (it does so
/// asynchronously), deleting it by hand past `timeout`, so the slot is free to reuse.
pub fn await_link_gone(slot: &NetworkSlot, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while host_link_exists(slot) {
        if Instant::now() >= deadline {
            let _ = crate::netlink::delete_link(&slot.host_ifname());
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether the host end of `slot` exists in this network namespace.
pub fn host_link_exists(slot: &NetworkSlot) -> bool {
    crate::netlink::link_exists(&slot.host_ifname())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_slash_30s() {
        let a = NetworkSlot::new(0);
        let b = NetworkSlot::new(1);
        assert_eq!(a.host_addr(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(a.instance_addr(), Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(b.host_addr(), Ipv4Addr::new(10, 88, 0, 5));
        let last = NetworkSlot::new(SLOTS - 1);
        assert_eq!(last.instance_addr(), Ipv4Addr::new(10, 88, 255, 254));
        assert_eq!(last.host_ifname().len(), 10);
        let routed = NetworkSlot::routed(Ipv4Addr::new(10, 90, 3, 0), 2);
        assert_eq!(routed.instance_addr(), Ipv4Addr::new(10, 90, 3, 10));
        assert_eq!(routed.host_ifname(), "skf0a5a0308");
    }
}
