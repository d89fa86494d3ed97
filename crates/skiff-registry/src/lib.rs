//! skiff as a client of OCI distribution registries: resolving a reference to a manifest
//! (an index picks linux/amd64, as import does), fetching its blobs with digest and size
//! checked as they stream, and handing them to the image store, which installs the image
//! or removes everything the pull brought.
//!
//! The protocol (manifests, blobs, HTTP basic and the bearer-token flow) is `oci-client`'s;
//! this crate adds the checks a hostile registry calls for. It also holds the storage side
//! of the registry skiff serves (`hosted.rs`); HTTP is the daemon's. It must not know
//! services.
#![forbid(unsafe_code)]

mod credentials;
mod hosted;
mod pull;

pub use credentials::{CredentialsError, Login, Registries};
pub use hosted::{valid_repository, Hosted, HostedError, StoredManifest};
pub use oci_client::secrets::RegistryAuth;
pub use pull::{
    fetch, names_registry, pull, registry_of, FetchFailed, FetchedImage, PullEvent, PullOptions,
    PullProgress, Pulled,
};

/// Why a pull failed, naming the registry, the repository and, for a blob, its digest.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Reference(String),
    #[error("{registry}/{repository}: {why}")]
    Registry {
        registry: String,
        repository: String,
        why: String,
    },
    #[error("{registry}/{repository}: blob {digest}: {why}")]
    Blob {
        registry: String,
        repository: String,
        digest: String,
        why: String,
    },
    #[error("{registry}/{repository}: {source}")]
    Image {
        registry: String,
        repository: String,
        #[source]
        source: Box<skiff_image::ImageError>,
    },
}
