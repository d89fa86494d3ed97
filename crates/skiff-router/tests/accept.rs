//! The accept loop out of file descriptors, for real: this test binary lowers its own
//! RLIMIT_NOFILE and fills the table (hence a binary of its own, with one test), then a
//! client waiting in the backlog must get the 503 at once rather than time out, and the
//! loop must serve again once descriptors are free.

use skiff_router::accept::{Acceptor, OUT_OF_DESCRIPTORS_503};
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn out_of_descriptors_a_waiting_client_is_refused_then_served_again() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut acceptor = Acceptor::new("test", OUT_OF_DESCRIPTORS_503);
    // The kernel completes the handshake into the backlog without an accept.
    let mut refused = std::net::TcpStream::connect(addr).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    refused
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();

    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(256),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let mut filler = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        filler.push(f);
    }

    let (first, second) = runtime.block_on(async {
        let accepting = async {
            let (a, _) = acceptor.next(&listener).await;
            a
        };
        tokio::pin!(accepting);
        // The loop refuses the waiting client while it finds no descriptor.
        let mut answer = Vec::new();
        let read = tokio::task::spawn_blocking(move || {
            refused.read_to_end(&mut answer).unwrap();
            answer
        });
        let answer = tokio::select! {
            a = read => a.unwrap(),
            _ = &mut accepting => panic!("accepted with no descriptor free"),
        };
        // Descriptors free again: the next client is served.
        filler.truncate(filler.len().saturating_sub(16));
        let served = std::net::TcpStream::connect(addr).unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(5), accepting)
            .await
            .expect("served within the backoff's cap");
        drop(served);
        (answer, accepted)
    });
    let text = String::from_utf8_lossy(&first);
    assert!(
        text.starts_with("HTTP/1.1 503 ") && text.contains("out of file descriptors"),
        "{text}"
    );
    assert!(second.peer_addr().is_ok());
}
