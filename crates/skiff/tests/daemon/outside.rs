//! A network namespace that stands in for "the outside" in tests: nothing the tests
//! send leaves the machine.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A network namespace standing in for the outside, reached from the host through a
/// veth: a public-looking address (a /30 of TEST-NET-2, which this workplace's own
/// infrastructure does not use) and a private one, with a server listening on both. It
/// has no route back to instances: only NAT lets them talk.
pub struct Outside {
    name: String,
    host_link: String,
    servers: Vec<Child>,
    pub public: String,
    pub private: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Outside {
    /// Outside number `n` (1-60, one per test at a time), running `program args…` with
    /// `PORT` set, ready once `port` accepts connections.
    pub fn new(n: u16, program: &str, args: &[&str], port: u16) -> Outside {
        let name = format!("skout{}-{n}", std::process::id());
        let host_link = format!("skouth{n}");
        let public = format!("198.51.100.{}", n * 4 + 2);
        let private = format!("192.168.{n}.2");
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("198.51.100.{}/30", n * 4 + 1),
            "dev",
            &host_link,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("192.168.{n}.1/24"),
            "dev",
            &host_link,
        ]);
        ip(&["link", "set", &host_link, "up"]);
        let inside = |args: &[&str]| {
            let mut full = vec!["netns", "exec", &name, "ip"];
            full.extend_from_slice(args);
            ip(&full);
        };
        inside(&["addr", "add", &format!("{public}/30"), "dev", "eth0"]);
        inside(&["addr", "add", &format!("{private}/24"), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["link", "set", "lo", "up"]);
        let mut o = Outside {
            name,
            host_link,
            servers: Vec::new(),
            public,
            private,
        };
        o.serve(program, args, port);
        o
    }

    /// Runs one more server in it, `program args…` with `PORT` set; returns once `port`
    /// accepts connections.
    pub fn serve(&mut self, program: &str, args: &[&str], port: u16) {
        let server = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the outside server");
        self.servers.push(server);
        // Ready once it answers from the host.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((self.public.as_str(), port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the outside server {program} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
