//! The DNS server instances use: it answers `NAME.svc.skiff.internal` (a service, or a
//! tagged `TAG-NAME`) with the address where the router takes calls between services,
//! `host.skiff.internal` with the host's address, other names under `skiff.internal`
//! with NXDOMAIN, and forwards every other query, bytes unchanged, to the host's own
//! resolvers (UDP to UDP, TCP to TCP), so answers keep whatever the upstream put in them.
//!
//! Messages are parsed and built with `hickory-proto`; this module holds no cache and no
//! recursion: it must not become a resolver.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{rdata::A, DNSClass, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};

/// The zone skiff answers for itself.
pub const ZONE: &str = "skiff.internal.";
const SERVICE_ZONE: &str = ".svc.skiff.internal.";
const HOST_NAME: &str = "host.skiff.internal.";
/// Topics take events at `NAME.topics.skiff.internal`, on the router.
const TOPIC_ZONE: &str = ".topics.skiff.internal.";
/// Service addresses may move between daemons' lives; the host's does not.
const SERVICE_TTL: u32 = 5;
const HOST_TTL: u32 = 60;
/// How long an upstream may take to answer one query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Queries forwarded at once; past it the answer is SERVFAIL rather than more sockets.
const MAX_FORWARDS: usize = 256;
/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Whether a host label (`NAME` or `TAG-NAME`) is a service's.
pub type ServiceLookup = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What the server answers with, and where it forwards to.
#[derive(Clone)]
pub struct DnsConfig {
    pub service_addr: Ipv4Addr,
    pub host_addr: Ipv4Addr,
    pub upstreams: Vec<SocketAddr>,
    pub services: ServiceLookup,
    /// Whether a label is a topic's.
    pub topics: ServiceLookup,
}

/// What to do with one query.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Answer with these bytes.
    Reply(Vec<u8>),
    /// Not skiff's name: pass it on.
    Forward,
    /// Not a DNS query at all.
    Ignore,
}

fn decide(query: &[u8], config: &DnsConfig) -> Verdict {
    let Ok(request) = Message::from_vec(query) else {
        return Verdict::Ignore;
    };
    if request.metadata.message_type != MessageType::Query {
        return Verdict::Ignore;
    }
    let [question] = request.queries.as_slice() else {
        return reply(&request, ResponseCode::FormErr, None);
    };
    let name = question.name().to_lowercase().to_ascii();
    let name = if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    };
    if request.metadata.op_code != OpCode::Query || !name.ends_with(ZONE) {
        return Verdict::Forward;
    }
    let address = if name == HOST_NAME {
        Some((config.host_addr, HOST_TTL))
    } else {
        let known = |zone: &str, lookup: &ServiceLookup| {
            name.strip_suffix(zone)
                .is_some_and(|label| !label.contains('.') && lookup(label))
        };
        (known(SERVICE_ZONE, &config.services) || known(TOPIC_ZONE, &config.topics))
            .then_some((config.service_addr, SERVICE_TTL))
    };
    match address {
        None => reply(&request, ResponseCode::NXDomain, None),
        Some(_) if question.query_class() != DNSClass::IN => {
            reply(&request, ResponseCode::NoError, None)
        }
        // The name exists; it has no records of other types (NODATA).
        Some(_) if question.query_type() != RecordType::A => {
            reply(&request, ResponseCode::NoError, None)
        }
        Some((addr, ttl)) => reply(
            &request,
            ResponseCode::NoError,
            Some(Record::from_rdata(
                question.name().clone(),
                ttl,
                RData::A(A(addr)),
            )),
        ),
    }
}

fn reply(request: &Message, code: ResponseCode, answer: Option<Record>) -> Verdict {
    let mut m = Message::response(request.metadata.id, request.metadata.op_code);
    m.metadata.recursion_desired = request.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.authoritative = true;
    m.metadata.response_code = code;
    m.queries = request.queries.clone();
    m.answers.extend(answer);
    match m.to_vec() {
        Ok(bytes) => Verdict::Reply(bytes),
        Err(_) => Verdict::Ignore,
    }
}

/// SERVFAIL for a query whose upstreams all failed (the id and question echoed).
fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    match reply(&request, ResponseCode::ServFail, None) {
        Verdict::Reply(bytes) => Some(bytes),
        _ => None,
    }
}

/// The server: a UDP socket and a TCP listener on the same port.
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    config: Arc<DnsConfig>,
}

impl DnsServer {
    /// Binds UDP and TCP on `ip` and one port both have free.
    pub async fn bind(ip: Ipv4Addr, config: DnsConfig) -> std::io::Result<DnsServer> {
        let mut last = None;
        for _ in 0..16 {
            let udp = UdpSocket::bind((ip, 0)).await?;
            let port = udp.local_addr()?.port();
            match TcpListener::bind((ip, port)).await {
                Ok(tcp) => {
                    return Ok(DnsServer {
                        udp: Arc::new(udp),
                        tcp,
                        config: Arc::new(config),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    /// The port it listens on (UDP and TCP).
    pub fn port(&self) -> u16 {
        self.udp.local_addr().map_or(0, |a| a.port())
    }

    /// Answers until `stop` turns true.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) {
        let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                got = self.udp.recv_from(&mut buf) => {
                    let Ok((n, from)) = got else { continue };
                    self.on_datagram(buf[..n].to_vec(), from, &forwards);
                }
                conn = self.tcp.accept() => {
                    if let Ok((stream, _)) = conn {
                        tokio::spawn(serve_tcp(stream, Arc::clone(&self.config)));
                    }
                }
            }
        }
    }

    fn on_datagram(&self, query: Vec<u8>, from: SocketAddr, forwards: &Arc<Semaphore>) {
        match decide(&query, &self.config) {
            Verdict::Ignore => {}
            Verdict::Reply(bytes) => {
                let _ = self.udp.try_send_to(&bytes, from);
            }
            Verdict::Forward => {
                let Ok(permit) = Arc::clone(forwards).try_acquire_owned() else {
                    if let Some(bytes) = server_failure(&query) {
                        let _ = self.udp.try_send_to(&bytes, from);
                    }
                    return;
                };
                let udp = Arc::clone(&self.udp);
                let upstreams = self.config.upstreams.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let answer = match forward_udp(&query, &upstreams).await {
                        Some(bytes) => Some(bytes),
                        None => server_failure(&query),
                    };
                    if let Some(bytes) = answer {
                        let _ = udp.send_to(&bytes, from).await;
                    }
                });
            }
        }
    }
}

/// Asks each upstream in turn over UDP; the first answer wins.
async fn forward_udp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let attempt = async {
            let bind: SocketAddr = if upstream.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let sock = UdpSocket::bind(bind).await.ok()?;
            sock.connect(upstream).await.ok()?;
            sock.send(query).await.ok()?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = sock.recv(&mut buf).await.ok()?;
                // Only the answer to this query (same id) counts.
                if n >= 2 && buf[..2] == query[..2] {
                    buf.truncate(n);
                    return Some(buf);
                }
            }
        };
        if let Ok(Some(answer)) = tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            return Some(answer);
        }
    }
    None
}

/// Asks each upstream in turn over TCP.
async fn forward_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let attempt = async {
            let mut s = TcpStream::connect(upstream).await.ok()?;
            write_frame(&mut s, query).await.ok()?;
            read_frame(&mut s).await.ok()
        };
        if let Ok(Some(answer)) = tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            return Some(answer);
        }
    }
    None
}

async fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| std::io::Error::other("too long"))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    s.write_all(&framed).await
}

/// Serves one TCP client: length-prefixed queries, one at a time, until it goes idle.
async fn serve_tcp(mut stream: TcpStream, config: Arc<DnsConfig>) {
    while let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_frame(&mut stream)).await {
        let answer = match decide(&query, &config) {
            Verdict::Ignore => return,
            Verdict::Reply(bytes) => Some(bytes),
            Verdict::Forward => match forward_tcp(&query, &config.upstreams).await {
                Some(bytes) => Some(bytes),
                None => server_failure(&query),
            },
        };
        match answer {
            Some(bytes) if write_frame(&mut stream, &bytes).await.is_ok() => {}
            _ => return,
        }
    }
}

/// The nameservers of a `resolv.conf` text, on port 53.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|addr| addr.split('%').next()?.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn config() -> DnsConfig {
        DnsConfig {
            service_addr: Ipv4Addr::new(10, 89, 0, 1),
            host_addr: Ipv4Addr::new(10, 89, 0, 2),
            upstreams: Vec::new(),
            services: Arc::new(|label| label == "other" || label == "blue-other"),
            topics: Arc::new(|label| label == "orders"),
        }
    }

    fn ask(name: &str, kind: RecordType) -> Verdict {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        decide(&m.to_vec().unwrap(), &config())
    }

    fn answer(v: Verdict) -> (ResponseCode, Vec<Ipv4Addr>) {
        let Verdict::Reply(bytes) = v else {
            panic!("not answered: {v:?}")
        };
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, 7);
        let addrs = m
            .answers
            .iter()
            .filter_map(|r| match r.data {
                RData::A(A(a)) => Some(a),
                _ => None,
            })
            .collect();
        (m.metadata.response_code, addrs)
    }

    #[test]
    fn services_and_the_host_resolve_to_skiffs_addresses() {
        let svc = vec![Ipv4Addr::new(10, 89, 0, 1)];
        assert_eq!(
            answer(ask("other.svc.skiff.internal.", RecordType::A)),
            (ResponseCode::NoError, svc.clone())
        );
        assert_eq!(
            answer(ask("OTHER.svc.skiff.internal", RecordType::A)),
            (ResponseCode::NoError, svc.clone())
        );
        assert_eq!(
            answer(ask("blue-other.svc.skiff.internal.", RecordType::A)),
            (ResponseCode::NoError, svc.clone())
        );
        // Topics take events on the router too.
        assert_eq!(
            answer(ask("orders.topics.skiff.internal.", RecordType::A)),
            (ResponseCode::NoError, svc)
        );
        assert_eq!(
            answer(ask("other.topics.skiff.internal.", RecordType::A)).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            answer(ask("host.skiff.internal.", RecordType::A)),
            (ResponseCode::NoError, vec![Ipv4Addr::new(10, 89, 0, 2)])
        );
    }

    #[test]
    fn unknown_names_in_the_zone_do_not_exist_and_other_types_are_empty() {
        assert_eq!(
            answer(ask("gone.svc.skiff.internal.", RecordType::A)).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            answer(ask("a.other.svc.skiff.internal.", RecordType::A)).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            answer(ask("x.skiff.internal.", RecordType::A)).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            answer(ask("other.svc.skiff.internal.", RecordType::AAAA)),
            (ResponseCode::NoError, vec![])
        );
    }

    #[test]
    fn other_names_are_forwarded_and_garbage_is_ignored() {
        assert_eq!(ask("example.org.", RecordType::A), Verdict::Forward);
        assert_eq!(
            ask("skiff.internal.example.org.", RecordType::A),
            Verdict::Forward
        );
        assert_eq!(decide(b"\x00\x07garbage", &config()), Verdict::Ignore);
    }

    #[test]
    fn nameservers_come_from_resolv_conf() {
        let text = "# c\nnameserver 10.0.0.53\nsearch x\nnameserver fe80::1%eth0\nnameserver\n";
        assert_eq!(
            nameservers(text),
            vec![
                "10.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[tokio::test]
    async fn it_answers_over_udp_and_tcp_and_forwards_to_an_upstream() {
        // An upstream on loopback that answers every query with SERVFAIL's opposite:
        // a fixed A record, so the forwarded bytes can be recognised.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            while let Ok((n, from)) = upstream.recv_from(&mut buf).await {
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.queries = q.queries.clone();
                r.answers.push(Record::from_rdata(
                    q.queries[0].name().clone(),
                    30,
                    RData::A(A(Ipv4Addr::new(203, 0, 113, 9))),
                ));
                upstream.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        let mut cfg = config();
        cfg.upstreams = vec![upstream_addr];
        let server = DnsServer::bind(Ipv4Addr::LOCALHOST, cfg).await.unwrap();
        let port = server.port();
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(server.serve(stop));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for (name, want) in [
            ("other.svc.skiff.internal.", Ipv4Addr::new(10, 89, 0, 1)),
            ("outside.example.", Ipv4Addr::new(203, 0, 113, 9)),
        ] {
            let mut m = Message::query();
            m.metadata.id = 7;
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            client
                .send_to(&m.to_vec().unwrap(), ("127.0.0.1", port))
                .await
                .unwrap();
            let mut buf = vec![0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                answer(Verdict::Reply(buf[..n].to_vec())).1,
                vec![want],
                "{name}"
            );
        }

        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(
            Name::from_ascii("host.skiff.internal.").unwrap(),
            RecordType::A,
        ));
        write_frame(&mut tcp, &m.to_vec().unwrap()).await.unwrap();
        let back = read_frame(&mut tcp).await.unwrap();
        assert_eq!(
            answer(Verdict::Reply(back)).1,
            vec![Ipv4Addr::new(10, 89, 0, 2)]
        );
    }
}
