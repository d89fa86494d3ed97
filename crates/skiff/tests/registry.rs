//! skiff as a registry client, end to end: Debian's `docker-registry` (the reference
//! distribution server) on loopback, filled by skopeo, pulled by `skiff image pull` and
//! deployed; and a hostile registry written here whose answers lie (a wrong digest, a
//! truncated blob, a blob longer than its manifest says, one that never ends), each
//! refused with the registry, repository and digest named, leaving nothing behind.

mod daemon;

use daemon::{hello_binary, Daemon};
use sha2::{Digest as _, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A docker archive of one image: the hello binary as `/hello`, its entrypoint.
fn hello_archive(dir: &Path) -> PathBuf {
    versioned_archive(dir, 1)
}

/// The hello image with `VERSION=version` in its environment (its layer is the same).
fn versioned_archive(dir: &Path, version: u32) -> PathBuf {
    let dir = dir.join(format!("v{version}"));
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(hello_binary(), root.join("hello")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/sbin/nologin\n").unwrap();
    let layer = dir.join("layer.tar");
    run(
        "tar",
        &[
            "--owner=0",
            "--group=0",
            "-C",
            root.to_str().unwrap(),
            "-cf",
            layer.to_str().unwrap(),
            ".",
        ],
    );
    let diff_id = format!(
        "sha256:{:x}",
        Sha256::digest(std::fs::read(&layer).unwrap())
    );
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/hello"], "Env": ["PATH=/bin", format!("VERSION={version}")]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        r#"[{"Config":"config.json","RepoTags":["hello:1"],"Layers":["layer.tar"]}]"#,
    )
    .unwrap();
    let archive = dir.join("hello.tar");
    run(
        "tar",
        &[
            "-C",
            dir.to_str().unwrap(),
            "-cf",
            archive.to_str().unwrap(),
            "manifest.json",
            "config.json",
            "layer.tar",
        ],
    );
    archive
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's docker-registry on a loopback port, storing under a temporary directory.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

/// A self-signed certificate and its key, `NAME.crt` and `NAME.key` in `dir` (openssl).
fn self_signed(dir: &Path, name: &str, subject: &str) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
            "-days",
            "1",
            "-subj",
            subject,
        ],
    );
}

/// A CA and a certificate it signed for 127.0.0.1, made with openssl in `dir`:
/// (ca.crt, server.crt, server.key).
fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    self_signed(dir, "ca", "/CN=skiff test CA");
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("server.crt"),
            "-days",
            "1",
            "-extfile",
            &p("san.ext"),
        ],
    );
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

impl Registry {
    fn start() -> Registry {
        Self::start_with("")
    }

    /// With HTTP basic auth (htpasswd, bcrypt) for `user`/`password`, behind TLS with a
    /// certificate from a CA the test makes; returns it and the CA's certificate.
    fn start_secured(user: &str, password: &str, pki: &Path) -> (Registry, PathBuf) {
        let (ca, cert, key) = test_pki(pki);
        let htpasswd = run("htpasswd", &["-Bbn", user, password]);
        let file = pki.join("htpasswd");
        std::fs::write(&file, htpasswd).unwrap();
        let extra = format!(
            "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
            file.display()
        );
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        (Self::start_with_http(&extra, &tls), ca)
    }

    fn start_with(extra: &str) -> Registry {
        Self::start_with_http(extra, "")
    }

    fn start_with_http(extra: &str, http: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n{extra}http:\n  addr: {addr}\n{http}",
            dir.path().join("data").display()
        );
        let file = dir.path().join("config.yml");
        std::fs::write(&file, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed by scripts/deps");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Registry {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Pushes the docker archive's image as `repo:tag`, as users do with skopeo.
    fn push(&self, archive: &Path, repo_tag: &str) {
        self.push_with(archive, repo_tag, &[]);
    }

    fn push_with(&self, archive: &Path, repo_tag: &str, flags: &[&str]) {
        let src = format!("docker-archive:{}", archive.display());
        let dest = format!("docker://{}/{repo_tag}", self.addr);
        let mut args = vec!["copy", "-q", "--dest-tls-verify=false"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&src, &dest]);
        run("skopeo", &args);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `VERSION` the service's instance sees.
fn version_of(d: &Daemon, service: &str) -> String {
    let env = d.get(service, "/env").text();
    env.lines()
        .find_map(|l| l.strip_prefix("VERSION="))
        .unwrap_or_else(|| panic!("no VERSION in {env}"))
        .to_owned()
}

#[test]
fn a_deploy_pulls_its_image_and_its_revision_keeps_the_digest_the_tag_had() {
    let work = tempfile::tempdir().unwrap();
    let registry = Registry::start();
    registry.push(&versioned_archive(work.path(), 1), "app:1");
    let mut d = Daemon::start(&[]);
    let name = format!("{}/app:1", registry.addr);
    // Not in the store: the deploy pulls it.
    d.ok(&["deploy", "app", "--image", &name]);
    assert_eq!(version_of(&d, "app"), "1");
    let first = d.json(&["describe", "app"])["revisions"][0]["image_digest"].clone();
    // The tag moves; the running revision stays on what it resolved to, restart or not.
    registry.push(&versioned_archive(work.path(), 2), "app:1");
    d.stop();
    d.launch();
    assert_eq!(version_of(&d, "app"), "1");
    // A new deploy resolves the tag again.
    d.ok(&["deploy", "app", "-e", "NEXT=1"]);
    assert_eq!(version_of(&d, "app"), "2");
    let detail = d.json(&["describe", "app"]);
    assert_ne!(detail["revisions"][0]["image_digest"], first, "{detail}");
    assert_eq!(detail["revisions"][1]["image_digest"], first, "{detail}");
    assert_eq!(detail["revisions"][0]["spec"]["image"], name.as_str());
    // Export shows the tag and what it resolved to; the digest alone deploys too.
    let exported = d.ok(&["export", "app"]);
    let digest = detail["revisions"][0]["image_digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        exported.contains(&format!("skiff.dev/image-digest: {digest}"))
            && exported.contains(&format!("image: {name}")),
        "{exported}"
    );
    let by_digest = format!("{}/app@{digest}", registry.addr);
    d.ok(&["deploy", "pinned", "--image", &by_digest]);
    assert_eq!(version_of(&d, "pinned"), "2");
    // The first revision's image is still there, by digest, for a rollback.
    d.ok(&["rollback", "app"]);
    assert_eq!(version_of(&d, "app"), "1");
    // A registry that has no such image fails the deploy with its answer, named.
    let out = d.cli(&[
        "deploy",
        "gone",
        "--image",
        &format!("{}/nothing:1", registry.addr),
    ]);
    assert!(!out.status.success());
    let err = daemon::stderr(&out);
    assert!(
        err.contains(&format!("pulling {}/nothing:1", registry.addr)),
        "{err}"
    );
}

#[test]
fn an_image_pushed_with_skopeo_is_pulled_deployed_and_served() {
    let work = tempfile::tempdir().unwrap();
    let archive = hello_archive(work.path());
    let registry = Registry::start();
    registry.push(&archive, "team/hello:1");
    let d = Daemon::start(&[]);
    let name = format!("{}/team/hello:1", registry.addr);
    let listed = d.json(&["image", "pull", &name]);
    assert_eq!(listed[0]["tags"], serde_json::json!([name]), "{listed}");
    // Deployed without a first instance: the request below starts it, from zero.
    d.ok(&[
        "deploy",
        "pulled",
        "--image",
        &name,
        "--initial-instances",
        "0",
    ]);
    assert_eq!(d.ready("pulled"), 0);
    let r = d.get("pulled", "/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("hello from pulled-"), "{}", r.text());
    // Again: everything is in the store already; the same image.
    let again = d.json(&["image", "pull", &name]);
    assert_eq!(again[0]["digest"], listed[0]["digest"]);
    // Not there: the registry's answer, named.
    let missing = d.cli(&[
        "image",
        "pull",
        &format!("{}/team/nothing:1", registry.addr),
    ]);
    assert!(!missing.status.success());
    let err = daemon::stderr(&missing);
    assert!(
        err.contains(&format!("{}/team/nothing", registry.addr)),
        "{err}"
    );
}

/// How the hostile registry lies about the one layer blob.
#[derive(Clone, Copy)]
enum Lie {
    /// Other bytes than the digest names.
    WrongContent,
    /// Fewer bytes than the manifest and Content-Length say, then the connection closes.
    Truncated,
    /// More bytes than the manifest says.
    Longer,
    /// Bytes without end.
    Endless,
    /// Serves exactly the bytes the manifest names, but they are not a tar archive.
    NotATar,
    /// A manifest without end.
    EndlessManifest,
    /// Drops the connection a thousand bytes into the layer, once; serves the rest of a
    /// ranged request (206).
    DropsOnce,
    /// Asks for HTTP basic credentials, then sends the layer's request to another host
    /// (on this port): the credentials must not follow it there.
    RedirectTo(u16),
}

/// A registry that serves one image, `evil:1`, lying about its layer as `lie` says.
fn hostile_registry(lie: Lie) -> String {
    // An empty tar (its end marker and padding), or for NotATar, bytes that are none.
    let layer = vec![
        if matches!(lie, Lie::NotATar) {
            7u8
        } else {
            0u8
        };
        4096
    ];
    let layer_digest = format!("sha256:{:x}", Sha256::digest(&layer));
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string()
    .into_bytes();
    let config_digest = format!("sha256:{:x}", Sha256::digest(&config));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (manifest, config, layer) = (manifest.clone(), config.clone(), layer.clone());
            let (config_digest, layer_digest) = (config_digest.clone(), layer_digest.clone());
            std::thread::spawn(move || {
                let _ = serve(
                    conn,
                    lie,
                    &manifest,
                    (&config_digest, &config),
                    (&layer_digest, &layer),
                );
            });
        }
    });
    addr
}

fn serve(
    conn: TcpStream,
    lie: Lie,
    manifest: &[u8],
    config: (&str, &[u8]),
    layer: (&str, &[u8]),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut authorized = false;
        let mut range: Option<usize> = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            authorized |= lower.starts_with("authorization: basic ");
            if let Some(from) = lower.strip_prefix("range: bytes=") {
                range = from.trim().trim_end_matches('-').parse().ok();
            }
        }
        if matches!(lie, Lie::RedirectTo(_)) && !authorized {
            write!(out, "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"evil\"\r\ncontent-length: 0\r\n\r\n")?;
            continue;
        }
        let send = |out: &mut TcpStream, kind: &str, body: &[u8], length: usize| {
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {length}\r\n\r\n"
            )?;
            out.write_all(body)
        };
        if path == "/v2/" {
            send(&mut out, "application/json", b"{}", 2)?;
        } else if path.starts_with("/v2/evil/manifests/") && matches!(lie, Lie::EndlessManifest) {
            write!(out, "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ntransfer-encoding: chunked\r\n\r\n")?;
            let chunk = vec![b' '; 65536];
            loop {
                write!(out, "{:x}\r\n", chunk.len())?;
                out.write_all(&chunk)?;
                out.write_all(b"\r\n")?;
            }
        } else if path.starts_with("/v2/evil/manifests/") {
            send(
                &mut out,
                "application/vnd.oci.image.manifest.v1+json",
                manifest,
                manifest.len(),
            )?;
        } else if path == format!("/v2/evil/blobs/{}", config.0) {
            send(
                &mut out,
                "application/octet-stream",
                config.1,
                config.1.len(),
            )?;
        } else if path == format!("/v2/evil/blobs/{}", layer.0) {
            match lie {
                Lie::NotATar | Lie::EndlessManifest => {
                    send(&mut out, "application/octet-stream", layer.1, layer.1.len())?;
                }
                Lie::DropsOnce => match range {
                    None => {
                        send(
                            &mut out,
                            "application/octet-stream",
                            &layer.1[..1000],
                            layer.1.len(),
                        )?;
                        return Ok(());
                    }
                    Some(from) => {
                        let rest = &layer.1[from..];
                        write!(
                            out,
                            "HTTP/1.1 206 Partial Content\r\ncontent-type: application/octet-stream\r\ncontent-range: bytes {from}-{}/{}\r\ncontent-length: {}\r\n\r\n",
                            layer.1.len() - 1,
                            layer.1.len(),
                            rest.len()
                        )?;
                        out.write_all(rest)?;
                    }
                },
                Lie::WrongContent => {
                    let other = vec![8u8; layer.1.len()];
                    send(&mut out, "application/octet-stream", &other, other.len())?;
                }
                Lie::Truncated => {
                    send(
                        &mut out,
                        "application/octet-stream",
                        &layer.1[..100],
                        layer.1.len(),
                    )?;
                    return Ok(());
                }
                Lie::Longer => {
                    let more = [layer.1, &[0u8; 100]].concat();
                    send(&mut out, "application/octet-stream", &more, more.len())?;
                }
                Lie::RedirectTo(port) => {
                    write!(out, "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://localhost:{port}{path}\r\ncontent-length: 0\r\n\r\n")?;
                }
                Lie::Endless => {
                    write!(out, "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n")?;
                    let chunk = vec![7u8; 65536];
                    loop {
                        write!(out, "{:x}\r\n", chunk.len())?;
                        out.write_all(&chunk)?;
                        out.write_all(b"\r\n")?;
                    }
                }
            }
        } else {
            write!(out, "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")?;
        }
    }
}

/// The names of the files in `dir` (none when it does not exist).
fn files_in(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_lying_registry_is_refused_by_name_and_leaves_nothing_behind() {
    let d = Daemon::start(&[]);
    let blobs = d.home.path().join("blobs/sha256");
    let before = files_in(&blobs);
    assert!(
        !before.is_empty(),
        "the packed hello image's blobs are in {}",
        blobs.display()
    );
    let images_before = d.json(&["image", "ls"]);
    let layer_digest = format!("sha256:{:x}", Sha256::digest(vec![0u8; 4096]));
    for (lie, says) in [
        (Lie::WrongContent, "Invalid digest"),
        (Lie::Truncated, ""),
        (Lie::Longer, "longer than the 4096 bytes its manifest gives"),
        (
            Lie::Endless,
            "longer than the 4096 bytes its manifest gives",
        ),
    ] {
        let addr = hostile_registry(lie);
        let t0 = Instant::now();
        let out = d.cli(&["image", "pull", &format!("{addr}/evil:1")]);
        assert!(!out.status.success());
        let err = daemon::stderr(&out);
        assert!(
            err.contains(&format!("{addr}/evil: blob {layer_digest}")) && err.contains(says),
            "{err}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(d.json(&["image", "ls"]), images_before, "{err}");
        assert_eq!(files_in(&blobs), before, "blobs left by: {err}");
        let scratch = files_in(&d.home.path().join("tmp"));
        assert!(scratch.is_empty(), "scratch files left: {scratch:?}");
    }
}

#[test]
fn a_registry_behind_tls_and_basic_auth_is_pulled_from_after_login() {
    let work = tempfile::tempdir().unwrap();
    let (registry, ca) = Registry::start_secured("ci", "s3cret-pw", work.path());
    registry.push_with(
        &hello_archive(work.path()),
        "app:1",
        &["--dest-creds", "ci:s3cret-pw"],
    );
    let d = Daemon::start(&[]);
    let name = format!("{}/app:1", registry.addr);
    // No credentials: the registry's refusal, named.
    let out = d.cli(&["deploy", "app", "--image", &name]);
    assert!(!out.status.success());
    let err = daemon::stderr(&out);
    assert!(err.contains(&format!("pulling {name}")), "{err}");
    // Credentials but not the CA: TLS refuses the registry's certificate.
    let login = |extra: &[&str]| {
        let mut args = vec![
            "registry",
            "login",
            registry.addr.as_str(),
            "-u",
            "ci",
            "--password-stdin",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(daemon::skiff_bin())
            .args(["--home", d.home.path().to_str().unwrap()])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"s3cret-pw\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    };
    login(&[]);
    let out = d.cli(&["deploy", "app", "--image", &name]);
    assert!(!out.status.success(), "pulled without trusting the CA");
    login(&["--ca-file", ca.to_str().unwrap()]);
    d.ok(&["deploy", "app", "--image", &name]);
    let r = d.get("app", "/");
    assert_eq!(r.status, 200, "{}", r.text());
    // Root-only, and the secret is in no listing.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.home.path().join("registries.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let listed = d.ok(&["registry", "ls"]);
    assert!(
        listed.contains(&registry.addr) && !listed.contains("s3cret"),
        "{listed}"
    );
}

#[test]
fn an_endless_manifest_is_cut_off() {
    let d = Daemon::start(&[]);
    let addr = hostile_registry(Lie::EndlessManifest);
    let t0 = Instant::now();
    let out = d.cli(&["image", "pull", &format!("{addr}/evil:1")]);
    assert!(!out.status.success());
    let err = daemon::stderr(&out);
    assert!(
        err.contains(&format!("{addr}/evil: fetching the manifest")) && err.contains("longer than"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[test]
fn an_interrupted_layer_is_resumed_where_it_stopped() {
    let d = Daemon::start(&[]);
    let addr = hostile_registry(Lie::DropsOnce);
    let listed = d.json(&["image", "pull", &format!("{addr}/evil:1")]);
    assert_eq!(
        listed[0]["tags"],
        serde_json::json!([format!("{addr}/evil:1")])
    );
}

#[test]
fn a_layer_that_does_not_unpack_leaves_no_blob_and_no_snapshot() {
    let d = Daemon::start(&[]);
    let blobs = d.home.path().join("blobs/sha256");
    let snapshots = d.home.path().join("snapshots");
    let (blobs_before, snapshots_before) = (files_in(&blobs), files_in(&snapshots));
    let addr = hostile_registry(Lie::NotATar);
    let out = d.cli(&["image", "pull", &format!("{addr}/evil:1")]);
    assert!(!out.status.success());
    let err = daemon::stderr(&out);
    let digest = format!("sha256:{:x}", Sha256::digest(vec![7u8; 4096]));
    assert!(
        err.contains(&format!("{addr}/evil: layer {digest}")),
        "{err}"
    );
    assert_eq!(files_in(&blobs), blobs_before, "{err}");
    assert_eq!(files_in(&snapshots), snapshots_before, "{err}");
    assert!(files_in(&d.home.path().join("tmp")).is_empty());
}

/// A host that serves any path with `body` and reports each request's headers.
fn spy(body: Vec<u8>) -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let _ = tx.send(head);
            let mut out = conn;
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(&body);
        }
    });
    (port, rx)
}

#[test]
fn credentials_do_not_follow_a_redirect_to_another_host() {
    let d = Daemon::start(&[]);
    // The other host serves the right layer: only the credentials are at stake.
    let (port, seen) = spy(vec![0u8; 4096]);
    let addr = hostile_registry(Lie::RedirectTo(port));
    let mut child = Command::new(daemon::skiff_bin())
        .args(["--home", d.home.path().to_str().unwrap(), "image", "pull"])
        .args([&format!("{addr}/evil:1"), "-u", "me", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let head = seen
        .recv_timeout(Duration::from_secs(10))
        .expect("the redirect was followed");
    assert!(
        !head.to_ascii_lowercase().contains("authorization"),
        "credentials went to another host:\n{head}"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// base64url without padding, as JWTs are written.
fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token service for docker-registry's bearer-token flow: it checks HTTP basic
/// credentials and hands out RS256 JWTs (signed with openssl) granting what was asked.
struct TokenService {
    port: u16,
}

impl TokenService {
    fn start(dir: &Path, user: &str, password: &str) -> (TokenService, PathBuf) {
        let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        self_signed(dir, "token", "/CN=skiff test token issuer");
        let der = std::process::Command::new("openssl")
            .args(["x509", "-in", &p("token.crt"), "-outform", "DER"])
            .output()
            .unwrap()
            .stdout;
        use base64_std::encode;
        let x5c = encode(&der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let expected = format!("Basic {}", encode(format!("{user}:{password}").as_bytes()));
        let key = dir.join("token.key");
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut auth = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line
                        .strip_prefix("Authorization: ")
                        .or_else(|| line.strip_prefix("authorization: "))
                    {
                        auth = v.trim().to_owned();
                    }
                }
                let mut out = conn;
                if auth != expected {
                    let _ = write!(out, "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    continue;
                }
                let target = request.split_whitespace().nth(1).unwrap_or("/");
                let query = target.split_once('?').map_or("", |(_, q)| q);
                let access: Vec<serde_json::Value> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(|scope| scope.replace("%3A", ":").replace("%2C", ","))
                    .filter_map(|scope| {
                        let mut parts = scope.splitn(3, ':');
                        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": "skiff-test-issuer", "sub": "ci", "aud": "skiff-test",
                    "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{port}"),
                    "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut sign = std::process::Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign", key.to_str().unwrap()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                sign.stdin
                    .take()
                    .unwrap()
                    .write_all(signing_input.as_bytes())
                    .unwrap();
                let signature = sign.wait_with_output().unwrap().stdout;
                let token = format!("{signing_input}.{}", b64url(&signature));
                let body =
                    serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                        .to_string();
                let _ = write!(out, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            }
        });
        (TokenService { port }, dir.join("token.crt"))
    }
}

/// Standard base64, for the basic credentials and the certificate in `x5c`.
mod base64_std {
    pub fn encode(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

#[test]
fn the_bearer_token_flow_of_a_real_registry_is_followed() {
    let work = tempfile::tempdir().unwrap();
    let (tokens, cert) = TokenService::start(work.path(), "ci", "t0ken-pw");
    let extra = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: skiff-test\n    issuer: skiff-test-issuer\n    rootcertbundle: {}\n",
        tokens.port,
        cert.display()
    );
    let registry = Registry::start_with(&extra);
    registry.push_with(
        &hello_archive(work.path()),
        "app:1",
        &["--dest-creds", "ci:t0ken-pw"],
    );
    let d = Daemon::start(&[]);
    let name = format!("{}/app:1", registry.addr);
    let anonymous = d.cli(&["image", "pull", &name]);
    assert!(!anonymous.status.success(), "pulled without a token");
    let mut child = Command::new(daemon::skiff_bin())
        .args([
            "--home",
            d.home.path().to_str().unwrap(),
            "registry",
            "login",
            &registry.addr,
            "-u",
            "ci",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"t0ken-pw\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    d.ok(&["deploy", "app", "--image", &name]);
    let r = d.get("app", "/");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The token the daemon's built-in registry takes as a password.
fn registry_token(d: &Daemon) -> String {
    std::fs::read_to_string(d.home.path().join("registry.token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn skopeo_pushes_into_skiff_and_the_image_deploys_by_either_name() {
    let work = tempfile::tempdir().unwrap();
    let archive = versioned_archive(work.path(), 7);
    let d = Daemon::start(&[]);
    assert!(d.registry.starts_with("127.0.0.1:"), "{:?}", d.registry);
    let token = registry_token(&d);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.home.path().join("registry.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let blobs = d.home.path().join("blobs/sha256");
    let (blobs_before, images_before) = (files_in(&blobs), d.json(&["image", "ls"]));
    let push = |creds: Option<&str>| {
        let mut args = vec![
            "copy".to_owned(),
            "-q".to_owned(),
            "--dest-tls-verify=false".to_owned(),
        ];
        if let Some(c) = creds {
            args.push("--dest-creds".to_owned());
            args.push(c.to_owned());
        }
        args.push(format!("docker-archive:{}", archive.display()));
        args.push(format!("docker://{}/team/app:1", d.registry));
        Command::new("skopeo").args(&args).output().unwrap()
    };
    // Without the token: refused, and nothing stored.
    let refused = push(Some("someone:wrong-token"));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401")
            || String::from_utf8_lossy(&refused.stderr)
                .to_lowercase()
                .contains("unauthorized"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(files_in(&blobs), blobs_before);
    assert_eq!(d.json(&["image", "ls"]), images_before);
    // With it: pushed, listed under both names, deployable by either, no pull.
    let pushed = push(Some(&format!("oauth2accesstoken:{token}")));
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let full = format!("{}/team/app:1", d.registry);
    d.ok(&["deploy", "by-address", "--image", &full]);
    d.ok(&["deploy", "by-name", "--image", "team/app:1"]);
    for service in ["by-address", "by-name"] {
        assert_eq!(version_of(&d, service), "7", "{service}");
    }
    let image = d.json(&["image", "inspect", "team/app:1"]);
    assert_eq!(
        d.json(&["image", "inspect", &full])["digest"],
        image["digest"],
        "one image, two names"
    );
    // And it is pulled back as it was pushed.
    let pulled = tempfile::tempdir().unwrap();
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false", "--src-creds"])
        .arg(format!("x:{token}"))
        .arg(format!("docker://{full}"))
        .arg(format!("oci:{}:back", pulled.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn buildah_and_an_oci_archive_push_into_skiff() {
    let work = tempfile::tempdir().unwrap();
    let d = Daemon::start(&[]);
    let token = registry_token(&d);
    let creds = format!("x:{token}");
    // An OCI archive, as skopeo and buildah write them.
    let oci = work.path().join("app.oci.tar");
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!(
                "docker-archive:{}",
                versioned_archive(work.path(), 3).display()
            ),
            &format!("oci-archive:{}:app", oci.display()),
        ],
    );
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &format!("oci-archive:{}:app", oci.display()),
            &format!("docker://{}/oci/app:3", d.registry),
        ],
    );
    d.ok(&["deploy", "from-oci", "--image", "oci/app:3"]);
    assert_eq!(version_of(&d, "from-oci"), "3");
    // buildah, with its own storage (vfs) under the test's directory.
    let storage = work.path().join("containers");
    let (root, runroot) = (
        format!("--root={}/root", storage.display()),
        format!("--runroot={}/run", storage.display()),
    );
    let buildah = |args: &[&str]| {
        let mut all = vec![root.as_str(), runroot.as_str(), "--storage-driver=vfs"];
        all.extend_from_slice(args);
        run("buildah", &all).trim().to_owned()
    };
    buildah(&["pull", "-q", &format!("oci-archive:{}:app", oci.display())]);
    let image = buildah(&["images", "-q"]);
    let image = image.lines().next().unwrap().to_owned();
    buildah(&[
        "push",
        "-q",
        "--tls-verify=false",
        "--creds",
        &creds,
        &image,
        &format!("docker://{}/built/app:1", d.registry),
    ]);
    d.ok(&[
        "deploy",
        "from-buildah",
        "--image",
        &format!("{}/built/app:1", d.registry),
    ]);
    assert_eq!(version_of(&d, "from-buildah"), "3");
    let tags = d.json(&["image", "ls"]);
    assert!(tags.to_string().contains("built/app:1"), "{tags}");
}

/// One request to the daemon's registry with the token; (status, headers, body).
fn registry_call(d: &Daemon, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("x:{}", registry_token(d)));
    let mut s = TcpStream::connect(&d.registry).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Basic {auth}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        d.registry,
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

#[test]
fn the_registry_api_takes_monolithic_uploads_mounts_lists_tags_and_refuses_bad_digests() {
    let d = Daemon::start(&[]);
    let blob = b"a blob of bytes".to_vec();
    let digest = format!("sha256:{:x}", Sha256::digest(&blob));
    // A wrong digest: refused, and not stored.
    let wrong = format!("sha256:{:x}", Sha256::digest(b"other"));
    let (status, _, body) = registry_call(
        &d,
        "POST",
        &format!("/v2/mono/blobs/uploads/?digest={wrong}"),
        &blob,
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("DIGEST_INVALID"));
    let (status, _, _) = registry_call(&d, "HEAD", &format!("/v2/mono/blobs/{wrong}"), b"");
    assert_eq!(status, 404);
    // Monolithic: the blob in the POST.
    let (status, head, _) = registry_call(
        &d,
        "POST",
        &format!("/v2/mono/blobs/uploads/?digest={digest}"),
        &blob,
    );
    assert_eq!(status, 201, "{head}");
    let (status, _, got) = registry_call(&d, "GET", &format!("/v2/mono/blobs/{digest}"), b"");
    assert_eq!((status, got), (200, blob.clone()));
    // Mounted into another repository without sending it again.
    let (status, head, _) = registry_call(
        &d,
        "POST",
        &format!("/v2/other/blobs/uploads/?mount={digest}&from=mono"),
        b"",
    );
    assert_eq!(status, 201, "{head}");
    // Chunked: two PATCHes, then the PUT with the digest.
    let (status, head, _) = registry_call(&d, "POST", "/v2/chunked/blobs/uploads/", b"");
    assert_eq!(status, 202, "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .trim()
        .to_owned();
    let (status, head, _) = registry_call(&d, "PATCH", &location, &blob[..5]);
    assert_eq!(status, 202, "{head}");
    assert!(head.contains("range: 0-4"), "{head}");
    registry_call(&d, "PATCH", &location, &blob[5..]);
    let (status, head, _) = registry_call(&d, "PUT", &format!("{location}?digest={digest}"), b"");
    assert_eq!(status, 201, "{head}");
    // A manifest naming a blob the registry lacks is refused.
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": wrong, "size": 5},
        "layers": [],
    });
    let (status, _, body) = registry_call(
        &d,
        "PUT",
        "/v2/mono/manifests/1",
        manifest.to_string().as_bytes(),
    );
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("BLOB_UNKNOWN"));
    let (status, _, body) = registry_call(&d, "GET", "/v2/mono/tags/list", b"");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["tags"],
        serde_json::json!([])
    );
    // Names outside the spec's grammar are refused.
    let (status, _, body) = registry_call(&d, "GET", "/v2/../etc/tags/list", b"");
    assert!(
        status == 400 || status == 404,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn the_built_in_registry_serves_tls_when_given_a_certificate() {
    let work = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(work.path());
    let d = Daemon::start(&[
        "--registry-cert",
        cert.to_str().unwrap(),
        "--registry-key",
        key.to_str().unwrap(),
    ]);
    // skopeo trusts the CA from a directory of certificates, as Docker's certs.d.
    let certs = work.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let archive = versioned_archive(work.path(), 9);
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            "--dest-cert-dir",
            certs.to_str().unwrap(),
            "--dest-creds",
            &format!("x:{}", registry_token(&d)),
            &format!("docker-archive:{}", archive.display()),
            &format!("docker://{}/tls/app:1", d.registry),
        ],
    );
    d.ok(&["deploy", "over-tls", "--image", "tls/app:1"]);
    assert_eq!(version_of(&d, "over-tls"), "9");
    // Plain HTTP gets no HTTP answer from it.
    let mut s = TcpStream::connect(&d.registry).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
