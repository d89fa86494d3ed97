//! A real `skiff server` for end-to-end tests: its own data directory, socket and ingress
//! port, the hello example packed into it, and small clients for HTTP and the CLI.

#![allow(dead_code)]

pub mod outside;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn skiff_bin() -> &'static str {
    env!("CARGO_BIN_EXE_skiff")
}

/// The hello example, built once (statically) per test run.
pub fn hello_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = Command::new("bash")
            .arg(root.join("examples/hello/build.sh"))
            .arg(root.join("target/hello"))
            .output()
            .expect("running examples/hello/build.sh");
        assert!(
            out.status.success(),
            "building hello: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

pub struct Daemon {
    pub home: tempfile::TempDir,
    pub socket: PathBuf,
    pub port: u16,
    /// Where its built-in registry listens (`127.0.0.1:PORT`).
    pub registry: String,
    /// Where its TCP API listens (`127.0.0.1:PORT`), when started with `--api-listen`.
    pub api_tcp: Option<String>,
    /// This daemon's instance subnet (tests run daemons side by side).
    pub subnet: Subnet,
    child: Option<Child>,
    extra: Vec<String>,
    /// RLIMIT_NOFILE (soft and hard) to start the server with, if not the test's own.
    nofile: Option<u64>,
    /// Whether the server's stderr goes to [`Daemon::stderr_file`] (for tests that read
    /// what it logged) rather than to the test's.
    stderr_to_file: bool,
}

/// A /24 for one test daemon's instances, held (by a lock file) until dropped, so
/// daemons of tests running at once, in any test binary, never share one.
pub struct Subnet {
    pub third_octet: u16,
    _lock: std::fs::File,
}

impl Subnet {
    pub fn claim() -> Subnet {
        use std::os::fd::AsRawFd;
        let start = (std::process::id() % 200) as u16;
        for i in 0..250u16 {
            let n = (start + i) % 250;
            let path = std::env::temp_dir().join(format!("skiff-e2e-subnet-{n}.lock"));
            let file = std::fs::File::create(&path).unwrap();
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Subnet {
                    third_octet: n,
                    _lock: file,
                };
            }
        }
        panic!("no free test subnet under 10.91.0.0/16");
    }

    pub fn cidr(&self) -> String {
        format!("10.91.{}.0/24", self.third_octet)
    }

    /// Where instances find skiff (DNS, services).
    pub fn service_addr(&self) -> String {
        format!("10.91.{}.1", self.third_octet)
    }
}

impl Daemon {
    /// A daemon with the hello image packed as `hello:latest`.
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::start_limited(extra, None)
    }

    /// A daemon as [`Daemon::start`] makes, whose RLIMIT_NOFILE (soft and hard, so it
    /// cannot raise it) is `nofile`.
    pub fn start_limited(extra: &[&str], nofile: Option<u64>) -> Daemon {
        let home = tempfile::Builder::new()
            .prefix("skiff-e2e-daemon-")
            .tempdir()
            .unwrap();
        Daemon::start_at(home, extra, nofile)
    }

    /// A daemon as [`Daemon::start_limited`] makes, on the data directory `home`.
    pub fn start_at(home: tempfile::TempDir, extra: &[&str], nofile: Option<u64>) -> Daemon {
        Daemon::start_with(home, extra, nofile, false)
    }

    /// A daemon as [`Daemon::start`] makes, whose stderr goes to [`Daemon::stderr_file`].
    pub fn start_logging_to_file(extra: &[&str]) -> Daemon {
        let home = tempfile::Builder::new()
            .prefix("skiff-e2e-daemon-")
            .tempdir()
            .unwrap();
        Daemon::start_with(home, extra, None, true)
    }

    fn start_with(
        home: tempfile::TempDir,
        extra: &[&str],
        nofile: Option<u64>,
        stderr_to_file: bool,
    ) -> Daemon {
        let socket = home.path().join("api.sock");
        let mut d = Daemon {
            home,
            socket,
            port: 0,
            registry: String::new(),
            api_tcp: None,
            subnet: Subnet::claim(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            nofile,
            stderr_to_file,
        };
        d.pack_hello();
        d.launch();
        d
    }

    /// Where the server's stderr goes when [`Daemon::stderr_to_file`] is set.
    pub fn stderr_file(&self) -> PathBuf {
        self.home.path().join("daemon.stderr")
    }

    fn pack_hello(&self) {
        let root = self.home.path().join("hello-root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::copy(hello_binary(), root.join("hello")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/sbin/nologin\napp:x:1000:1000:app:/tmp:/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
        let out = self.cli(&[
            "image",
            "pack",
            root.to_str().unwrap(),
            "--tag",
            "hello:latest",
            "--user",
            "app",
            "--entrypoint",
            "/hello",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// Starts the server process and waits for its ready line.
    pub fn launch(&mut self) {
        let mut cmd = Command::new(skiff_bin());
        cmd.args(["--home", self.home.path().to_str().unwrap()])
            .args(["--socket", self.socket.to_str().unwrap()])
            .arg("server")
            .args(["--ingress", "127.0.0.1:0", "--stop-timeout", "5s"])
            .args(if self.extra.iter().any(|a| a == "--instance-subnet") {
                vec![]
            } else {
                vec!["--instance-subnet".to_owned(), self.subnet.cidr()]
            })
            .args(["--registry", "127.0.0.1:0"])
            // Names that are not skiff's never leave the machine in tests: the only
            // upstream is a closed loopback port (tests that forward give their own).
            .args(if self.extra.iter().any(|a| a == "--dns-upstream") {
                &[][..]
            } else {
                &["--dns-upstream", "127.0.0.1:9"][..]
            })
            .args(&self.extra)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::piped());
        if self.stderr_to_file {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.stderr_file())
                .unwrap();
            cmd.stderr(file);
        } else {
            cmd.stderr(Stdio::inherit());
        }
        // A test that fails while another thread still holds its daemon never drops it;
        // the daemon then stops when the test's thread ends, instead of outliving the
        // test run (and holding cargo's output pipe open).
        let nofile = self.nofile;
        // SAFETY: prctl and setrlimit are async-signal-safe and touch no memory of the
        // parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(n) = nofile {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting skiff server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("ingress http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no ready line from skiff server: {line:?}"));
        self.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        self.api_tcp = line
            .split(" and https://")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .map(str::to_owned);
        self.registry = line
            .split("registry ")
            .nth(1)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        self.child = Some(child);
    }

    /// SIGTERMs the server and waits for it; returns its exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("skiff server did not stop within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the server (a crash) and waits for it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the server runs");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// Where this data directory's instances' cgroups and scratch directories are named
    /// (`h` and 12 hex digits of the SHA-256 of its canonical path).
    pub fn scope(&self) -> String {
        use sha2::Digest as _;
        use std::os::unix::ffi::OsStrExt;
        let canonical = std::fs::canonicalize(self.home.path()).unwrap();
        let hash = sha2::Sha256::digest(canonical.as_os_str().as_bytes());
        let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("h{hex}")
    }

    /// Every directory of this daemon's scope in the cgroup tree and under the scratch
    /// root (the scope directories themselves included).
    pub fn scope_leftovers(&self) -> Vec<String> {
        let scope = self.scope();
        let found = Command::new("find")
            .args([
                "/sys/fs/cgroup",
                "-path",
                &format!("*/skiff/{scope}*"),
                "-type",
                "d",
            ])
            .output()
            .unwrap();
        let mut left: Vec<String> = String::from_utf8_lossy(&found.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let scratch = Path::new("/run/skiff/instances").join(&scope);
        if scratch.exists() {
            left.push(scratch.display().to_string());
        }
        left
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(skiff_bin())
            .args(["--home", self.home.path().to_str().unwrap()])
            .args(["--socket", self.socket.to_str().unwrap()])
            .args(args)
            .output()
            .expect("running skiff")
    }

    /// One raw HTTP/1.1 exchange with the API socket (`headers` as `name: value\r\n`
    /// lines); the whole answer as text.
    pub fn api(&self, method: &str, path: &str, headers: &str, body: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        // One write: written piece by piece, the body could meet a connection the server
        // already answered (a 405 from the head alone) and closed.
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: skiff\r\nconnection: close\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    }

    /// Runs the CLI and insists it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "skiff {args:?} failed: {}",
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Deploys the hello image as `service` with extra deploy flags.
    /// `skiff token create NAME --role ROLE [--service S]…`: the token's text.
    pub fn token(&self, name: &str, role: &str, services: &[&str]) -> String {
        let mut args = vec!["token", "create", name, "--role", role];
        for s in services {
            args.extend(["--service", s]);
        }
        self.ok(&args).trim().to_owned()
    }

    pub fn deploy_hello(&self, service: &str, flags: &[&str]) -> String {
        let mut args = vec!["deploy", service, "--image", "hello"];
        args.extend_from_slice(flags);
        self.ok(&args)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ok(&full)).unwrap()
    }

    pub fn get(&self, service: &str, path: &str) -> Response {
        http(
            self.port,
            &format!("{service}.localhost"),
            "GET",
            path,
            &[],
            b"",
        )
    }

    /// The revision that answered a request for `host`, from hello's `/env`
    /// (`K_REVISION=`).
    pub fn revision_at(&self, host: &str) -> String {
        let r = http(self.port, host, "GET", "/env", &[], b"");
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        r.text()
            .lines()
            .find_map(|l| l.strip_prefix("K_REVISION="))
            .unwrap_or_else(|| panic!("no K_REVISION in {}", r.text()))
            .to_owned()
    }

    /// Ready instances of a service, as `skiff ls` reports them.
    pub fn ready(&self, service: &str) -> u64 {
        let ls = self.json(&["ls"]);
        ls.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == service)
            .map_or(0, |s| s["ready_instances"].as_u64().unwrap())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child by PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
pub fn http(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the ingress");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the response");
    parse_response(&raw)
}

/// A response head read from `s` byte by byte, up to and with its blank line, so that
/// nothing after it (a body, frames) is taken from the connection.
pub fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("reading a response head"), 1);
        head.push(byte[0]);
    }
    head
}

/// One response with a `content-length` (or none) from a kept connection.
pub fn read_one_response(s: &mut TcpStream) -> Response {
    let mut raw = read_head(s);
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("reading a response body");
    raw.extend_from_slice(&body);
    parse_response(&raw)
}

/// A raw HTTP/1.1 response (read to the end), its chunked body de-chunked.
pub fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..nl])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[nl + 2..nl + 2 + size]);
        data = &data[nl + 2 + size + 2..];
    }
}

/// Polls `check` until it holds or `limit` passes.
/// Files under `dir` that hold `needle` (a value that must be kept nowhere in clear).
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                dirs.push(e.path());
            } else if ty.is_file() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        found.push(e.path().display().to_string());
                    }
                }
            }
        }
    }
    found
}

pub fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PID of the one app process whose environment says it serves `service` (names here
/// are used by no other test, so parallel daemons do not mix them up). Its init executes
/// with the same environment (for exec probes) and is left out.
pub fn instance_pid(service: &str) -> i32 {
    let needle = format!("K_SERVICE={service}");
    let found: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() != "skiff-init")
        })
        .collect();
    assert_eq!(found.len(), 1, "processes of {service}: {found:?}");
    found[0]
}

/// The fields of `/proc/PID/stat` after the command's closing parenthesis (which may
/// itself hold spaces and parentheses): the state, field 3 of proc(5), comes first.
pub fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().map(str::to_owned).collect()
}

/// CPU clock ticks (user and system, fields 14 and 15) process `pid` has used.
pub fn cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(pid);
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The parent of process `pid` (field 4).
pub fn parent_pid(pid: u32) -> u32 {
    stat_fields(pid)[1].parse().unwrap()
}
