//! Which TCP ports an instance listens on, read from its network namespace's socket
//! tables (`/proc/PID/net/tcp` and `tcp6`), to tell a user which port an app opened when
//! it is not the one asked for. Not for the readiness check itself: the kernel walks its
//! whole connection hash table for every read (milliseconds on a large host), where a
//! connect is microseconds.
//!
//! This module parses; reading the files is the runtime's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `st` of a listening socket in the kernel's tables.
const LISTEN: &str = "0A";

/// The listening sockets in the text of `/proc/PID/net/tcp` and `/proc/PID/net/tcp6`.
pub fn listeners(tcp: &str, tcp6: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = table(tcp).chain(table(tcp6)).collect();
    out.sort();
    out.dedup();
    out
}

fn table(text: &str) -> impl Iterator<Item = SocketAddr> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        (state == LISTEN).then(|| socket(local)).flatten()
    })
}

/// `ADDR:PORT` as the kernel prints it: the address as native-endian 32-bit words in
/// hex, the port in hex.
fn socket(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    /// A table line as the kernel writes it, from an address and port on this machine.
    fn line(local: &str, state: &str) -> String {
        format!("   0: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0\n")
    }

    fn v4(ip: Ipv4Addr, port: u16) -> String {
        format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets()))
    }

    fn v6(ip: Ipv6Addr, port: u16) -> String {
        let words: String = ip
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        format!("{words}:{port:04X}")
    }

    #[test]
    fn listening_sockets_are_read_and_others_left_out() {
        let tcp = format!(
            "{HEAD}{}{}{}",
            line(&v4(Ipv4Addr::UNSPECIFIED, 8080), "0A"),
            line(&v4(Ipv4Addr::LOCALHOST, 3000), "0A"),
            line(&v4(Ipv4Addr::LOCALHOST, 8080), "01"),
        );
        let tcp6 = format!("{HEAD}{}", line(&v6(Ipv6Addr::LOCALHOST, 9000), "0A"));
        let found = listeners(&tcp, &tcp6);
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["0.0.0.0:8080", "127.0.0.1:3000", "[::1]:9000"]);
    }

    #[test]
    fn the_kernels_own_spelling_of_loopback_reads_as_loopback() {
        // On a little-endian host the kernel prints 127.0.0.1 as 0100007F.
        if cfg!(target_endian = "little") {
            let tcp = format!("{HEAD}{}", line("0100007F:1F90", "0A"));
            assert_eq!(listeners(&tcp, "")[0].to_string(), "127.0.0.1:8080");
        }
    }

    #[test]
    fn garbage_is_no_socket() {
        assert!(listeners("header\nnot a table\n   0: zz:yy 0 0A\n", "").is_empty());
    }
}
