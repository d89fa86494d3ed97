//! Pulling an image: the manifest (through an index to linux/amd64), then its config and
//! layers, several at once, each streamed to the store's scratch directory with its size
//! and digest checked on the way (a body longer than the manifest says is cut off and
//! refused), skipped when the store has it already. The store installs the image at the
//! end, or removes everything the pull brought.

use crate::RegistryError;
use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::{
    OciDescriptor, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use skiff_core::{Digest, ImageRef};
use skiff_image::{Expected, Fetched, ImageStore};
use skiff_store::{ImageRecord, Store};
use std::io::Write as _;
use std::time::Duration;

/// Times an interrupted blob download is resumed (with a Range request).
const MAX_RESUMES: u32 = 3;
/// Largest manifest or config accepted (they are read into memory).
const MAX_DOCUMENT: u64 = 4 << 20;

/// What a pull is doing, for a progress display. Blobs are named by digest.
#[derive(Debug)]
pub enum PullEvent<'a> {
    /// Bytes of a blob in so far (at most every 100 ms per blob).
    Downloading {
        digest: &'a str,
        done: u64,
        total: u64,
    },
    /// A blob is in, verified.
    Downloaded {
        digest: &'a str,
        bytes: u64,
        seconds: f64,
    },
    /// A blob the store had already.
    Cached { digest: &'a str },
}

/// Receives [`PullEvent`]s, from any thread.
pub type PullProgress = std::sync::Arc<dyn Fn(PullEvent<'_>) + Send + Sync>;

/// How to reach the registry.
pub struct PullOptions {
    pub auth: RegistryAuth,
    /// Plain HTTP is allowed (always for a registry on loopback, as containers/image does).
    pub insecure: bool,
    /// Extra CA certificates (PEM) to trust for this registry.
    pub ca_pem: Vec<Vec<u8>>,
    /// Layers fetched at once.
    pub parallel: usize,
    /// Told what the pull does, if anyone listens.
    pub progress: Option<PullProgress>,
}

impl PullOptions {
    fn tell(&self, event: PullEvent<'_>) {
        if let Some(f) = &self.progress {
            f(event);
        }
    }
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            auth: RegistryAuth::Anonymous,
            insecure: false,
            ca_pem: Vec::new(),
            parallel: 3,
            progress: None,
        }
    }
}

/// A pulled image and what its reference resolved to.
pub struct Pulled {
    pub image: ImageRecord,
    /// The manifest digest the reference resolved to.
    pub digest: Digest,
}

/// Whether `registry` (`host[:port]`) is on this machine's loopback.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Names what a failure is about.
struct Place {
    registry: String,
    repository: String,
}

impl Place {
    fn err(&self, why: impl std::fmt::Display) -> RegistryError {
        RegistryError::Registry {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            why: why.to_string(),
        }
    }

    fn blob_err(&self, digest: &str, why: impl std::fmt::Display) -> RegistryError {
        RegistryError::Blob {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            digest: digest.to_owned(),
            why: why.to_string(),
        }
    }
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::from_sha256_bytes(&Sha256::digest(bytes).into())
}

/// Pulls `reference` (`[REGISTRY/]REPOSITORY[:TAG|@DIGEST]`) into `store` and lists it
/// under that name.
pub async fn pull(
    store: &ImageStore,
    db: &mut Store,
    reference: &str,
    opts: &PullOptions,
) -> Result<Pulled, RegistryError> {
    let t0 = std::time::Instant::now();
    match fetch(store, reference, opts).await {
        Ok(image) => {
            let fetched = t0.elapsed();
            let pulled = image.install(store, db);
            tracing::debug!(image = %reference, ?fetched, installed = ?(t0.elapsed() - fetched), "pulled");
            pulled
        }
        Err(failed) => Err(failed.give_up(store, db)),
    }
}

/// An image whose blobs are all in the store, not yet listed.
pub struct FetchedImage {
    fetched: Fetched,
    manifest: Digest,
    tags: Vec<ImageRef>,
    origin: String,
    place: Place,
}

impl FetchedImage {
    /// The manifest digest the reference resolved to.
    pub fn digest(&self) -> &Digest {
        &self.manifest
    }

    /// Lists the image (unpacking its layers); on failure removes all the pull brought.
    pub fn install(self, store: &ImageStore, db: &mut Store) -> Result<Pulled, RegistryError> {
        let place = self.place;
        let image = store
            .install_fetched(db, self.fetched, &self.manifest, &self.tags, &self.origin)
            .map_err(|source| RegistryError::Image {
                registry: place.registry.clone(),
                repository: place.repository.clone(),
                source: Box::new(source),
            })?;
        Ok(Pulled {
            image,
            digest: self.manifest,
        })
    }
}

/// A fetch that failed, holding what it had stored so far.
pub struct FetchFailed {
    error: RegistryError,
    fetched: Option<Fetched>,
}

impl FetchFailed {
    /// Removes what the fetch stored; returns why it failed.
    pub fn give_up(self, store: &ImageStore, db: &Store) -> RegistryError {
        if let Some(f) = self.fetched {
            store.abandon_fetched(db, f);
        }
        self.error
    }

    /// Why it failed.
    pub fn error(&self) -> &RegistryError {
        &self.error
    }
}

/// Fetches the image `reference` names (manifest and blobs, verified) into the store,
/// without the database: the caller lists it with [`FetchedImage::install`], or removes
/// what a failed fetch stored with [`FetchFailed::give_up`].
pub async fn fetch(
    store: &ImageStore,
    reference: &str,
    opts: &PullOptions,
) -> Result<FetchedImage, FetchFailed> {
    let failed = |error| FetchFailed {
        error,
        fetched: None,
    };
    let parsed: Reference = reference.parse().map_err(|e| {
        failed(RegistryError::Reference(format!(
            "image reference {reference:?}: {e}"
        )))
    })?;
    let place = Place {
        registry: parsed.registry().to_owned(),
        repository: parsed.repository().to_owned(),
    };
    let tags: Vec<ImageRef> = match (parsed.digest(), reference.parse::<ImageRef>()) {
        (None, Ok(tag @ ImageRef::Tag { .. })) => vec![tag],
        _ => Vec::new(),
    };
    let (conn, first) = connect(&parsed, opts, &place).await.map_err(failed)?;
    let mut fetched = Fetched::default();
    match fetch_blobs(store, &conn, &parsed, opts, &place, first, &mut fetched).await {
        Ok(manifest) => Ok(FetchedImage {
            fetched,
            manifest,
            tags,
            origin: format!("registry:{reference}"),
            place,
        }),
        Err(error) => Err(FetchFailed {
            error,
            fetched: Some(fetched),
        }),
    }
}

/// The registry (`host[:port]`) a reference is pulled from (`docker.io` for a bare
/// name, as Docker and Knative resolve it).
pub fn registry_of(reference: &str) -> Result<String, RegistryError> {
    let parsed: Reference = reference
        .parse()
        .map_err(|e| RegistryError::Reference(format!("image reference {reference:?}: {e}")))?;
    Ok(parsed.registry().to_owned())
}

/// Whether `reference` names a registry (`host.name/…`, `host:port/…`, `localhost/…`),
/// as Docker tells a registry from a repository path.
pub fn names_registry(reference: &str) -> bool {
    match reference.split_once('/') {
        Some((first, _)) => first.contains(['.', ':']) || first == "localhost",
        None => false,
    }
}

/// Clients for the registry over HTTPS, or plain HTTP when `plain`.
fn client(
    parsed: &Reference,
    opts: &PullOptions,
    place: &Place,
    plain: bool,
) -> Result<Conn, RegistryError> {
    let mut http = reqwest::Client::builder()
        .read_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10));
    for pem in &opts.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| place.err(format!("the registry's CA certificate: {e}")))?;
        http = http.tls_certs_merge(certs);
    }
    let http = http
        .build()
        .map_err(|e| place.err(format!("setting up the client: {e}")))?;
    let registry = parsed.resolve_registry().to_owned();
    let protocol = if plain {
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    let config = ClientConfig {
        protocol,
        extra_root_certificates: opts
            .ca_pem
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        // Indexes are resolved here, as import does.
        platform_resolver: None,
        read_timeout: Some(Duration::from_secs(60)),
        connect_timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    let oci =
        Client::try_from(config).map_err(|e| place.err(format!("setting up the client: {e}")))?;
    Ok(Conn {
        oci,
        http,
        scheme: if plain { "http" } else { "https" },
    })
}

/// Asks for the manifest over HTTPS; where plain HTTP is allowed (an insecure registry,
/// or one on loopback) and HTTPS could not even connect, over HTTP, as containers/image
/// does. Returns the client that answered, and the manifest.
async fn connect(
    parsed: &Reference,
    opts: &PullOptions,
    place: &Place,
) -> Result<(Conn, (Vec<u8>, Digest)), RegistryError> {
    let https = client(parsed, opts, place, false)?;
    let tried = manifest(&https, parsed, opts, place, parsed.digest()).await;
    let plain_allowed = opts.insecure || is_loopback(parsed.resolve_registry());
    match tried {
        Ok(first) => Ok((https, first)),
        Err(Fault::Transport(why)) if plain_allowed => {
            let plain = client(parsed, opts, place, true)?;
            match manifest(&plain, parsed, opts, place, parsed.digest()).await {
                Ok(first) => Ok((plain, first)),
                Err(e) => Err(place.err(format!(
                    "over HTTPS: {why}; over plain HTTP: {}",
                    e.into_error(place)
                ))),
            }
        }
        Err(e) => Err(e.into_error(place)),
    }
}

/// A failed manifest request: the connection itself, or anything after it.
enum Fault {
    Transport(String),
    Other(RegistryError),
}

impl Fault {
    fn into_error(self, place: &Place) -> RegistryError {
        match self {
            Fault::Transport(why) => place.err(why),
            Fault::Other(e) => e,
        }
    }
}

impl From<RegistryError> for Fault {
    fn from(e: RegistryError) -> Self {
        Fault::Other(e)
    }
}

/// Fetches every blob the manifest (`first`, or the one its index picks) names; returns
/// the manifest's digest.
async fn fetch_blobs(
    store: &ImageStore,
    conn: &Conn,
    parsed: &Reference,
    opts: &PullOptions,
    place: &Place,
    first: (Vec<u8>, Digest),
    fetched: &mut Fetched,
) -> Result<Digest, RegistryError> {
    let (bytes, digest) = first;
    let (bytes, digest) = if is_index(&bytes) {
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| place.err(format!("index {digest}: {e}")))?;
        let candidates: Vec<_> = index
            .manifests()
            .iter()
            .filter(|d| skiff_image::is_manifest(d))
            .collect();
        let chosen = skiff_image::pick_platform(&candidates)
            .map_err(|e| place.err(format!("index {digest}: {e}")))?;
        let want = chosen.digest().to_string();
        let by_digest = Reference::with_digest(
            parsed.registry().to_owned(),
            parsed.repository().to_owned(),
            want.clone(),
        );
        let (bytes, got) = manifest(conn, &by_digest, opts, place, Some(&want))
            .await
            .map_err(|f| f.into_error(place))?;
        if bytes.len() as u64 != chosen.size() {
            return Err(place.blob_err(
                &want,
                format!(
                    "the manifest is {} bytes, the index says {}",
                    bytes.len(),
                    chosen.size()
                ),
            ));
        }
        (bytes, got)
    } else {
        (bytes, digest)
    };
    let parsed_manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| place.err(format!("manifest {digest}: {e}")))?;
    let config = parsed_manifest.config();
    let config_digest = config.digest().to_string();
    if config.size() > MAX_DOCUMENT {
        return Err(place.blob_err(&config_digest, "config too large"));
    }
    let descriptor = |d: &oci_spec::image::Descriptor| OciDescriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        urls: None,
        annotations: None,
        artifact_type: None,
    };
    let by_digest = Reference::with_digest(
        parsed.registry().to_owned(),
        parsed.repository().to_owned(),
        digest.to_string(),
    );
    // The config first: its diff ids say what each layer unpacks to.
    let config_blob = parse_blob_digest(&config_digest, place)?;
    if !store.blobs().contains(&config_blob) {
        let (file, expected) = download(
            &conn.oci,
            &by_digest,
            &descriptor(config),
            store,
            place,
            opts,
        )
        .await?;
        store
            .keep_fetched_hashed(fetched, file.path(), &expected)
            .map_err(|e| place.blob_err(&config_digest, e))?;
    }
    let config_bytes = store
        .blobs()
        .read_small(&config_blob)
        .map_err(|e| place.blob_err(&config_digest, e))?;
    let diff_ids = diff_ids(
        &config_bytes,
        parsed_manifest.layers().len(),
        &config_digest,
        place,
    )?;
    let layers: Vec<(OciDescriptor, Digest)> = parsed_manifest
        .layers()
        .iter()
        .map(|d| {
            Ok((
                descriptor(d),
                parse_blob_digest(d.digest().as_ref(), place)?,
            ))
        })
        .collect::<Result<_, RegistryError>>()?;
    fetch_and_unpack(
        store, &conn.oci, &by_digest, opts, place, layers, diff_ids, fetched,
    )
    .await?;
    store
        .keep_fetched_bytes(
            fetched,
            &bytes,
            &Expected {
                digest: digest.clone(),
                size: Some(bytes.len() as u64),
            },
        )
        .map_err(|e| place.blob_err(&digest.to_string(), e))?;
    Ok(digest)
}

fn parse_blob_digest(text: &str, place: &Place) -> Result<Digest, RegistryError> {
    text.parse()
        .map_err(|_| place.blob_err(text, "not a sha256 digest"))
}

/// The config's diff ids, one per layer.
fn diff_ids(
    config: &[u8],
    layers: usize,
    name: &str,
    place: &Place,
) -> Result<Vec<Digest>, RegistryError> {
    let parsed: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(config).map_err(|e| place.blob_err(name, format!("config: {e}")))?;
    let ids = parsed
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| parse_blob_digest(d, place))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.len() != layers {
        return Err(place.blob_err(
            name,
            format!(
                "the config lists {} diff ids for {layers} layers",
                ids.len()
            ),
        ));
    }
    Ok(ids)
}

/// Downloads the layers (several at once, handed on in order) and unpacks each on a
/// blocking thread as soon as it and those below it are in, while later ones still
/// download. What it stored and unpacked is recorded in `fetched`, also on failure.
#[allow(clippy::too_many_arguments)]
async fn fetch_and_unpack(
    store: &ImageStore,
    client: &Client,
    by_digest: &Reference,
    opts: &PullOptions,
    place: &Place,
    layers: Vec<(OciDescriptor, Digest)>,
    diff_ids: Vec<Digest>,
    fetched: &mut Fetched,
) -> Result<(), RegistryError> {
    let chains = skiff_image::chain_ids(&diff_ids);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Digest)>();
    let unpacker = {
        let store = store.clone();
        let chains = chains.clone();
        tokio::task::spawn_blocking(move || {
            let mut made = Vec::new();
            let mut below = Vec::new();
            for (i, blob) in rx {
                match store.unpack_fetched_layer(&blob, &diff_ids[i], &chains[i], &below) {
                    Ok(true) => made.push(chains[i].clone()),
                    Ok(false) => {}
                    Err(e) => return (made, Err(e)),
                }
                below.insert(0, store.snapshot_dir(&chains[i]));
            }
            (made, Ok(()))
        })
    };
    let stored = |d: &Digest| store.blobs().contains(d);
    let mut downloads = futures_util::stream::iter(layers.into_iter().enumerate())
        .map(|(i, (desc, blob))| {
            let cached = stored(&blob);
            async move {
                let file = if cached {
                    opts.tell(PullEvent::Cached {
                        digest: &desc.digest,
                    });
                    None
                } else {
                    Some(download(client, by_digest, &desc, store, place, opts).await?)
                };
                Ok::<_, RegistryError>((i, blob, file))
            }
        })
        .buffered(opts.parallel.max(1));
    let mut failure = None;
    while let Some(next) = downloads.next().await {
        let kept = next.and_then(|(i, blob, file)| {
            if let Some((file, expected)) = file {
                // Hashed while it streamed in (`download`): not read again.
                store
                    .keep_fetched_hashed(fetched, file.path(), &expected)
                    .map_err(|e| place.blob_err(&blob.to_string(), e))?;
            }
            Ok((i, blob))
        });
        match kept {
            // A send fails only when the unpacker stopped: its error says why.
            Ok(job) => {
                if tx.send(job).is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let (made, unpacked) = unpacker
        .await
        .map_err(|e| place.err(format!("the unpacking thread failed: {e}")))?;
    for chain in made {
        fetched.record_snapshot(chain);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    unpacked.map_err(|source| RegistryError::Image {
        registry: place.registry.clone(),
        repository: place.repository.clone(),
        source: Box::new(source),
    })
}

fn is_index(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| {
        let media = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        media == OCI_IMAGE_INDEX_MEDIA_TYPE
            || media == IMAGE_MANIFEST_LIST_MEDIA_TYPE
            || (v.get("manifests").is_some() && v.get("layers").is_none())
    })
}

/// How the registry is reached: oci-client for auth and blobs, and a plain reqwest
/// client (same TLS roots, timeouts and redirect rules) for manifests, whose bodies it
/// reads with a cap: oci-client would read an endless one into memory.
pub(crate) struct Conn {
    oci: Client,
    http: reqwest::Client,
    scheme: &'static str,
}

/// Fetches a manifest or index, at most [`MAX_DOCUMENT`] bytes, and checks it against
/// its digest: the one asked for, and the one the registry names in its answer.
async fn manifest(
    conn: &Conn,
    reference: &Reference,
    opts: &PullOptions,
    place: &Place,
    want: Option<&str>,
) -> Result<(Vec<u8>, Digest), Fault> {
    let accepted = [
        OCI_IMAGE_MEDIA_TYPE,
        IMAGE_MANIFEST_MEDIA_TYPE,
        OCI_IMAGE_INDEX_MEDIA_TYPE,
        IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    ]
    .join(", ");
    let what = format!("fetching the manifest of {reference}");
    let transport = |e: &reqwest::Error| e.is_connect() || e.is_timeout();
    // Asks for a token when the registry wants one (the bearer flow), as blobs will.
    let token = conn
        .oci
        .auth(reference, &opts.auth, oci_client::RegistryOperation::Pull)
        .await
        .map_err(|e| match &e {
            oci_client::errors::OciDistributionError::RequestError(r) if transport(r) => {
                Fault::Transport(format!("{what}: {e}"))
            }
            _ => Fault::Other(place.err(format!("{what}: {e}"))),
        })?;
    let target = reference.digest().or(reference.tag()).unwrap_or("latest");
    let url = format!(
        "{}://{}/v2/{}/manifests/{target}",
        conn.scheme,
        reference.resolve_registry(),
        reference.repository()
    );
    let mut request = conn
        .http
        .get(&url)
        .header(reqwest::header::ACCEPT, accepted);
    request = match (token, &opts.auth) {
        (Some(token), _) => request.bearer_auth(token),
        (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
        (None, _) => request,
    };
    let response = request.send().await.map_err(|e| {
        if transport(&e) {
            Fault::Transport(format!("{what}: {e}"))
        } else {
            Fault::Other(place.err(format!("{what}: {e}")))
        }
    })?;
    let status = response.status();
    let said = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| place.err(format!("{what}: {e}")))?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_DOCUMENT {
            return Err(place
                .err(format!("{what}: longer than {MAX_DOCUMENT} bytes: refused"))
                .into());
        }
    }
    if !status.is_success() {
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(place
            .err(format!("{what}: {status}: {}", excerpt.trim()))
            .into());
    }
    let digest = sha256(&body);
    for claimed in want
        .into_iter()
        .chain((!said.is_empty()).then_some(said.as_str()))
    {
        if claimed != digest.to_string() {
            return Err(place
                .blob_err(
                    claimed,
                    format!("the manifest's content hashes to {digest}"),
                )
                .into());
        }
    }
    Ok((body, digest))
}

/// Streams one blob to a scratch file, refusing it as soon as it runs past its size, and
/// checking its length and digest at the end.
async fn download(
    client: &Client,
    reference: &Reference,
    desc: &OciDescriptor,
    store: &ImageStore,
    place: &Place,
    opts: &PullOptions,
) -> Result<(tempfile::NamedTempFile, Expected), RegistryError> {
    let name = desc.digest.as_str();
    let started = std::time::Instant::now();
    let mut told = started;
    let expected_digest: Digest = name
        .parse()
        .map_err(|_| place.blob_err(name, "not a sha256 digest"))?;
    let size = u64::try_from(desc.size).map_err(|_| place.blob_err(name, "a negative size"))?;
    let io = |e: std::io::Error| place.blob_err(name, format!("writing it: {e}"));
    let file = tempfile::NamedTempFile::new_in(store.scratch_dir()).map_err(io)?;
    // Plain buffered writes: they land in the page cache in microseconds, where tokio's
    // file type would hop to a blocking thread for every chunk the body arrives in.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file.reopen().map_err(io)?);
    let fetch_err = |e: oci_client::errors::OciDistributionError| {
        place.blob_err(name, format!("fetching it: {e}"))
    };
    let mut response = BlobResponse::Full(
        client
            .pull_blob_stream(reference, desc)
            .await
            .map_err(fetch_err)?,
    );
    let mut hash = Sha256::new();
    let mut count = 0u64;
    let mut retries = 0;
    loop {
        let mut stream = match response {
            BlobResponse::Partial(s) => s,
            BlobResponse::Full(s) => {
                if count > 0 {
                    // The registry ignored the range: start over.
                    out.flush().map_err(io)?;
                    out.get_mut().set_len(0).map_err(io)?;
                    std::io::Seek::rewind(out.get_mut()).map_err(io)?;
                    count = 0;
                    hash = Sha256::new();
                }
                s
            }
        };
        let mut cut = None;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    cut = Some(e);
                    break;
                }
            };
            count += chunk.len() as u64;
            if count > size {
                return Err(place.blob_err(
                    name,
                    format!("longer than the {size} bytes its manifest gives"),
                ));
            }
            hash.update(&chunk);
            out.write_all(&chunk).map_err(io)?;
            if told.elapsed() >= Duration::from_millis(100) {
                told = std::time::Instant::now();
                opts.tell(PullEvent::Downloading {
                    digest: name,
                    done: count,
                    total: size,
                });
            }
        }
        // Cut short (a dropped connection): go on from where it stopped, with a Range
        // request, a few times. An error after the last byte is the content's own.
        match cut {
            None if count == size => break,
            Some(e) if count == size => {
                return Err(place.blob_err(name, format!("reading it: {e}")))
            }
            _ if retries < MAX_RESUMES => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100 << retries)).await;
                tracing::info!(blob = name, at = count, "resuming an interrupted download");
                response = client
                    .pull_blob_stream_partial(reference, desc, count, None)
                    .await
                    .map_err(fetch_err)?;
            }
            Some(e) => {
                return Err(
                    place.blob_err(name, format!("reading it: {e} (resumed {retries} times)"))
                )
            }
            None => break,
        }
    }
    out.flush().map_err(io)?;
    if count != size {
        return Err(place.blob_err(name, format!("truncated: {count} of {size} bytes")));
    }
    let got: Digest = Digest::from_sha256_bytes(&hash.finalize().into());
    if got != expected_digest {
        return Err(place.blob_err(name, format!("its content hashes to {got}")));
    }
    opts.tell(PullEvent::Downloaded {
        digest: name,
        bytes: size,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok((
        file,
        Expected {
            digest: expected_digest,
            size: Some(size),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        for r in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["registry.example:5000", "10.0.0.1:5000", "index.docker.io"] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn references_that_name_a_registry_are_told_from_local_names() {
        for r in [
            "127.0.0.1:5000/app:1",
            "localhost/app",
            "ghcr.io/o/app:1",
            "registry.example/a@sha256:00",
        ] {
            assert!(names_registry(r), "{r}");
        }
        for r in ["hello", "hello:1", "team/app:1", "sha256:00"] {
            assert!(!names_registry(r), "{r}");
        }
    }

    #[test]
    fn indexes_are_told_from_manifests() {
        assert!(is_index(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#));
        assert!(is_index(br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(!is_index(br#"{"schemaVersion":2,"config":{},"layers":[]}"#));
    }
}
