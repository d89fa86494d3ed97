//! The daemon's service network on the host: one subnet per daemon, held by a lock file
//! for the daemon's life; two /32 addresses on the loopback link (kernels without the
//! dummy link driver are common in VMs), the one where instances find skiff (DNS on 53,
//! other services on 80) and the one that stands for the host (`host.skiff.internal`);
//! IPv4 forwarding; and the nftables table with NAT and the egress firewall. Each
//! instance's policy is a few set elements, written before it starts.
//!
//! What it changes on the host, it says in the log; on stop it removes its addresses and
//! table and nothing else (forwarding stays on: other software may rely on it by then).

use crate::firewall::{self, TableSpec};
use crate::NetError;
use skiff_core::{EgressMode, EgressRule};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The subnet a daemon uses unless told otherwise.
pub const DEFAULT_SUBNET: &str = "10.89.0.0/16";

/// A subnet in CIDR form, /16 to /28 (a /30 per instance, the first for skiff itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Subnet {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = |why: &str| NetError::Subnet(format!("{s:?}: {why}"));
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("want ADDRESS/PREFIX"))?;
        let base: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if !(16..=28).contains(&prefix) {
            return Err(bad("the prefix length must be 16-28"));
        }
        let host_bits = u32::MAX >> prefix;
        if u32::from(base) & host_bits != 0 {
            return Err(bad("host bits are set after the prefix"));
        }
        Ok(Subnet { base, prefix })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Subnet {
    /// How many /30 slots it holds; slot 0 is skiff's own.
    pub fn slot_count(&self) -> u32 {
        1 << (30 - u32::from(self.prefix))
    }

    fn addr(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + offset)
    }

    /// Where instances reach skiff's DNS and the service router.
    pub fn service_addr(&self) -> Ipv4Addr {
        self.addr(1)
    }

    /// What `host.skiff.internal` resolves to.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.addr(2)
    }

    fn tag(&self) -> String {
        format!("{:08x}", u32::from(self.base))
    }
}

/// The network of one daemon, set up on the host; [`ServiceNetwork::remove`] takes it
/// down again.
pub struct ServiceNetwork {
    subnet: Subnet,
    table: String,
    /// Held for the daemon's life: the subnet is this daemon's.
    _lock: File,
    removed: std::sync::atomic::AtomicBool,
    /// The set elements written for each instance address, so a reused address first
    /// loses what its previous instance had.
    policies: Mutex<HashMap<Ipv4Addr, Vec<(&'static str, String)>>>,
}

impl ServiceNetwork {
    /// Claims `subnet` (a lock file under `lock_dir`), enables IPv4 forwarding and puts
    /// up the dummy link with skiff's two addresses. The firewall follows with
    /// [`ServiceNetwork::install_firewall`] once the DNS and router ports are known.
    pub fn create(subnet: Subnet, lock_dir: &Path) -> Result<ServiceNetwork, NetError> {
        let lock = claim(subnet, lock_dir)?;
        enable_forwarding()?;
        let addresses = [subnet.service_addr(), subnet.host_addr()];
        // Addresses of the subnet left on lo can only be a dead daemon's: the lock is ours.
        for addr in addresses {
            let _ = run(
                "ip",
                &["addr", "del", &format!("{addr}/32"), "dev", "lo"],
                "",
            );
        }
        let script: String = addresses
            .iter()
            .map(|a| format!("addr add {a}/32 dev lo\n"))
            .collect();
        run("ip", &["-batch", "-"], &script)
            .map_err(|e| NetError::Host(format!("adding {addresses:?} to lo: {e}")))?;
        tracing::info!("instance network {subnet}: skiff at {} on lo", addresses[0]);
        Ok(ServiceNetwork {
            subnet,
            table: format!("skiff_{}_{}", subnet.tag(), subnet.prefix),
            _lock: lock,
            removed: std::sync::atomic::AtomicBool::new(false),
            policies: Mutex::new(HashMap::new()),
        })
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// Installs (or replaces) the table: NAT out, the egress firewall, and the redirects
    /// of port 53 and 80 of the service address to where DNS and the router listen.
    pub fn install_firewall(&self, dns_port: u16, http_port: u16) -> Result<(), NetError> {
        let text = firewall::table(&TableSpec {
            name: self.table.clone(),
            subnet: self.subnet.base,
            prefix: self.subnet.prefix,
            service_addr: self.subnet.service_addr(),
            host_addr: self.subnet.host_addr(),
            dns_port,
            http_port,
        });
        run("nft", &["-f", "-"], &text).map_err(|e| {
            NetError::Host(format!("installing nftables table {}: {e}", self.table))
        })?;
        self.lock_policies().clear();
        Ok(())
    }

    fn lock_policies(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Ipv4Addr, Vec<(&'static str, String)>>> {
        self.policies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the instance at `instance` its egress policy (before it starts), replacing
    /// whatever an earlier instance at that address had. The default policy costs
    /// nothing: no `nft` runs.
    pub fn set_policy(
        &self,
        instance: Ipv4Addr,
        mode: EgressMode,
        rules: &[EgressRule],
    ) -> Result<(), NetError> {
        let new = firewall::elements(instance, mode, rules);
        let mut policies = self.lock_policies();
        let old = policies.remove(&instance).unwrap_or_default();
        if old.is_empty() && new.is_empty() {
            return Ok(());
        }
        let script = firewall::replace_elements(&self.table, &old, &new);
        if let Err(e) = run("nft", &["-f", "-"], &script) {
            // One transaction: nothing changed, the old elements still stand.
            if !old.is_empty() {
                policies.insert(instance, old);
            }
            return Err(NetError::Host(format!(
                "setting the egress policy of {instance}: {e}"
            )));
        }
        if !new.is_empty() {
            policies.insert(instance, new);
        }
        Ok(())
    }

    /// Takes the addresses and the table down (instances are gone by now); once.
    pub fn remove(&self) {
        if self.removed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        if let Err(e) = run("nft", &["delete", "table", "ip", &self.table], "") {
            tracing::warn!("removing nftables table {}: {e}", self.table);
        }
        for addr in [self.subnet.service_addr(), self.subnet.host_addr()] {
            if let Err(e) = run(
                "ip",
                &["addr", "del", &format!("{addr}/32"), "dev", "lo"],
                "",
            ) {
                tracing::warn!("removing {addr} from lo: {e}");
            }
        }
    }

    /// The instances' `/etc/resolv.conf`.
    pub fn resolv_conf(&self) -> String {
        format!(
            "# written by skiff: names of services resolve under svc.skiff.internal\nnameserver {}\nsearch svc.skiff.internal\noptions ndots:1\n",
            self.subnet.service_addr()
        )
    }
}

impl Drop for ServiceNetwork {
    /// A daemon that fails to start (or forgets) leaves nothing behind.
    fn drop(&mut self) {
        self.remove();
    }
}

/// Takes the subnet's lock file, or says which daemon holds it.
fn claim(subnet: Subnet, lock_dir: &Path) -> Result<File, NetError> {
    std::fs::create_dir_all(lock_dir)
        .map_err(|e| NetError::Host(format!("creating {}: {e}", lock_dir.display())))?;
    let path = lock_dir.join(format!("net-{}-{}.lock", subnet.tag(), subnet.prefix));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| NetError::Host(format!("opening {}: {e}", path.display())))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(NetError::Subnet(format!(
            "{subnet} is used by another skiff daemon (it holds {}): give this one \
             another --instance-subnet",
            path.display()
        ))),
        Err(e) => Err(NetError::Host(format!("locking {}: {e}", path.display()))),
    }
}

fn enable_forwarding() -> Result<(), NetError> {
    const KNOB: &str = "/proc/sys/net/ipv4/ip_forward";
    let now = std::fs::read_to_string(KNOB)
        .map_err(|e| NetError::Host(format!("reading {KNOB}: {e}")))?;
    if now.trim() != "1" {
        std::fs::write(KNOB, "1").map_err(|e| NetError::Host(format!("writing {KNOB}: {e}")))?;
        tracing::info!("enabled IPv4 forwarding ({KNOB}) so instances reach out through NAT");
    }
    Ok(())
}

/// Runs `program args…` with `input` on its stdin; its stderr is the error.
fn run(program: &str, args: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {program}: {e}"))?;
    let written = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    written.map_err(|e| format!("writing to {program}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_parsed_and_cut_into_slots() {
        let s: Subnet = "10.90.3.0/24".parse().unwrap();
        assert_eq!(s.slot_count(), 64);
        assert_eq!(s.service_addr(), Ipv4Addr::new(10, 90, 3, 1));
        assert_eq!(s.host_addr(), Ipv4Addr::new(10, 90, 3, 2));
        assert_eq!(s.to_string(), "10.90.3.0/24");
        for bad in [
            "10.90.3.0",
            "10.90.3.1/24",
            "10.0.0.0/8",
            "10.90.3.0/30",
            "x/24",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad} accepted");
        }
    }
}
