//! The few rtnetlink requests skiff needs, hand-written because they are on the cold-start
//! path: spawning `ip` cost ~3.4 ms per instance (measured), sending one message costs
//! microseconds. Create a veth pair with its peer in another process's network namespace,
//! delete a link by name, and configure an address and link state by ioctl.
//!
//! This module must not grow into a general netlink library: anything beyond these calls
//! belongs to a crate made for it.

#![allow(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const VETH_INFO_PEER: u16 = 1;
const NLA_F_NESTED: u16 = 1 << 15;

/// A netlink message under construction: header, family header, attributes.
struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Message {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(
            &(flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16).to_ne_bytes(),
        );
        buf[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
        Message {
            buf,
            nests: Vec::new(),
        }
    }

    /// Appends a `struct ifinfomsg` (family AF_UNSPEC).
    fn ifinfomsg(&mut self, index: i32, flags: u32, change: u32) -> &mut Self {
        let mut h = [0u8; IFINFOMSG_LEN];
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        h[8..12].copy_from_slice(&flags.to_ne_bytes());
        h[12..16].copy_from_slice(&change.to_ne_bytes());
        self.buf.extend_from_slice(&h);
        self
    }

    fn align(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.align();
        self
    }

    fn str_attr(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("balanced nesting");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(&mut self) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        &self.buf
    }
}

/// Sends one request to the kernel and waits for its acknowledgement.
fn request(msg: &mut Message) -> io::Result<()> {
    // SAFETY: socket/send/recv/close on a socket we own, with buffers we own.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let bytes = msg.finish();
        let result = (|| {
            if libc::send(fd, bytes.as_ptr().cast(), bytes.len(), 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut reply = [0u8; 4096];
            loop {
                let n = libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0);
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                let n = n as usize;
                if n < NLMSG_HDRLEN + 4 {
                    return Err(io::Error::other("short netlink reply"));
                }
                let kind = u16::from_ne_bytes([reply[4], reply[5]]);
                if kind != libc::NLMSG_ERROR as u16 {
                    continue; // not the acknowledgement
                }
                let code = i32::from_ne_bytes(reply[16..20].try_into().expect("4 bytes"));
                return if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
        })();
        libc::close(fd);
        result
    }
}

/// Creates veth pair `host` ⟷ `peer`, with `peer` inside the network namespace of `pid`.
pub fn create_veth(host: &str, peer: &str, pid: i32) -> io::Result<()> {
    let mut m = Message::new(
        libc::RTM_NEWLINK,
        (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
    );
    m.ifinfomsg(0, 0, 0).str_attr(libc::IFLA_IFNAME, host);
    m.begin(libc::IFLA_LINKINFO)
        .str_attr(libc::IFLA_INFO_KIND, "veth");
    m.begin(libc::IFLA_INFO_DATA).begin(VETH_INFO_PEER);
    // The peer's payload is an ifinfomsg followed by its own attributes.
    m.ifinfomsg(0, 0, 0)
        .str_attr(libc::IFLA_IFNAME, peer)
        .attr(libc::IFLA_NET_NS_PID, &(pid as u32).to_ne_bytes());
    m.end().end().end();
    request(&mut m)
}

/// Whether a link named `name` exists in this thread's network namespace. (Not
/// `/sys/class/net`: that shows the namespace of whoever mounted `/sys`, which is not
/// the daemon's own when it runs in a namespace of its own.)
pub fn link_exists(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a NUL-terminated name that outlives the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Deletes a link by name.
pub fn delete_link(name: &str) -> io::Result<()> {
    let mut m = Message::new(libc::RTM_DELLINK, 0);
    m.ifinfomsg(0, 0, 0).str_attr(libc::IFLA_IFNAME, name);
    request(&mut m)
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= r.ifr_name.len() {
        return Err(io::Error::other(format!(
            "interface name {name:?} too long"
        )));
    }
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

/// Gives interface `name` address `addr/mask` (when given) and brings it up, by ioctls on
/// an inet socket. Allocates nothing, not even for its errors (raw errnos): the sandbox
/// child calls it between clone and exec.
pub fn configure(name: &str, address: Option<(Ipv4Addr, Ipv4Addr)>) -> io::Result<()> {
    // SAFETY: ioctls on a socket we own, with correctly sized ifreq structs.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = (|| {
            let settings = address
                .map(|(addr, mask)| [(libc::SIOCSIFADDR, addr), (libc::SIOCSIFNETMASK, mask)]);
            for (request, value) in settings.into_iter().flatten() {
                let mut r = ifreq(name)?;
                r.ifr_ifru.ifru_addr = sockaddr_in(value);
                if libc::ioctl(sock, request, &r) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let mut r = ifreq(name)?;
            if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut r) < 0 {
                return Err(io::Error::last_os_error());
            }
            r.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &r) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })();
        libc::close(sock);
        result
    }
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and sockaddr is
    // plain old data; this is how the socket API expects an IPv4 address to be passed.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Adds the default route through `gateway` (on-link), by ioctl: like [`configure`], it
/// allocates nothing, so the sandbox child may call it.
pub fn add_default_route(gateway: Ipv4Addr) -> io::Result<()> {
    // SAFETY: an ioctl on a socket we own, with a zeroed (valid) rtentry whose addresses
    // are set before the call.
    unsafe {
        let mut route: libc::rtentry = std::mem::zeroed();
        route.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        route.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        route.rt_gateway = sockaddr_in(gateway);
        route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = if libc::ioctl(sock, libc::SIOCADDRT, &route) < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
        libc::close(sock);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_sized_and_aligned() {
        let mut m = Message::new(libc::RTM_NEWLINK, 0);
        m.ifinfomsg(0, 0, 0).str_attr(libc::IFLA_IFNAME, "ab");
        m.begin(libc::IFLA_LINKINFO)
            .str_attr(libc::IFLA_INFO_KIND, "veth")
            .end();
        let bytes = m.finish().to_vec();
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(bytes.len() % 4, 0);
        // ifname attr: 4 header + "ab\0" = 7, padded to 8.
        let at = NLMSG_HDRLEN + IFINFOMSG_LEN;
        assert_eq!(u16::from_ne_bytes([bytes[at], bytes[at + 1]]), 7);
        let nest = at + 8;
        assert_eq!(u16::from_ne_bytes([bytes[nest], bytes[nest + 1]]), 4 + 12);
        assert_eq!(
            u16::from_ne_bytes([bytes[nest + 2], bytes[nest + 3]]),
            libc::IFLA_LINKINFO | NLA_F_NESTED
        );
    }
}
