//! The API over TCP with TLS (`skiff server --api-listen ADDR`): the same routes as the
//! unix socket, each request authenticated by a bearer token (`skiff token`) and allowed
//! by its role and services (`api_auth.rs`). Without a certificate of the operator's,
//! the daemon makes its own authority and certificate at the first start and keeps both
//! in `$SKIFF_HOME/api.crt` (give that file to clients: `--ca-file`), the key in
//! `api.key` (0600); it prints the authority's SHA-256 fingerprint for pinning.

use anyhow::Context;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The API's TLS setup from the `given` certificate chain and key, or from `home`'s
/// `api.crt` and `api.key`, made for `listen` first if they are not there; with the
/// fingerprint of the certificate that clients trust (the chain's last) and its file.
pub fn certificate(
    home: &Path,
    listen: SocketAddr,
    given: Option<(&Path, &Path)>,
) -> anyhow::Result<(Arc<tokio_rustls::rustls::ServerConfig>, String, PathBuf)> {
    let (cert, key) = match given {
        Some((cert, key)) => (cert.to_owned(), key.to_owned()),
        None => {
            let (cert, key) = (home.join("api.crt"), home.join("api.key"));
            if !cert.exists() && !key.exists() {
                make_certificate(&cert, &key, listen).with_context(|| {
                    format!("making the API's certificate in {}", home.display())
                })?;
            }
            (cert, key)
        }
    };
    let config = super::tls::config(&cert, &key)?;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    let trusted = chain
        .last()
        .with_context(|| format!("{} holds no certificate", cert.display()))?;
    Ok((config, fingerprint(trusted), cert))
}

/// `AA:BB:…`: SHA-256 of a certificate.
fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A certificate authority of this daemon's (its key thrown away once it has signed)
/// and a certificate for localhost, the loopback addresses and `listen`'s address.
fn make_certificate(cert: &Path, key: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !listen.ip().is_unspecified() && !names.contains(&listen.ip().to_string()) {
        names.push(listen.ip().to_string());
    }
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "skiff API authority");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "skiff API");
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    let write = |path: &Path, text: &str, mode: u32| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))
    };
    write(key, &leaf_key.serialize_pem(), 0o600)?;
    write(
        cert,
        &format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        0o644,
    )?;
    Ok(())
}
