//! `skiff image pack`: turns a directory into a single-layer OCI image (gzip layer,
//! config, manifest) and installs it, so examples and tests need no registry or network.

use crate::blobs::{finish, HashingWriter};
use crate::error::ImageError;
use crate::install::Created;
use crate::ImageStore;
use oci_spec::image::MediaType;
use sha2::Digest as _;
use sha2::Sha256;
use skiff_core::ImageRef;
use skiff_core::DEFAULT_PATH;
use skiff_store::{ImageRecord, Store};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What the packed image runs.
#[derive(Clone, Debug, Default)]
pub struct PackOptions {
    /// Tag for the new image.
    pub tag: Option<ImageRef>,
    /// Entrypoint (argv).
    pub entrypoint: Vec<String>,
    /// Cmd (argv).
    pub cmd: Vec<String>,
    /// Extra `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User (`name`, `uid`, `uid:gid`).
    pub user: Option<String>,
}

impl ImageStore {
    /// Packs `dir` into an image and installs it.
    pub fn pack(
        &self,
        db: &mut Store,
        dir: &Path,
        opts: &PackOptions,
    ) -> Result<ImageRecord, ImageError> {
        let mut created = Created::default();
        let result = self.pack_inner(db, dir, opts, &mut created);
        if result.is_err() {
            created.undo(self, db);
        }
        result.map_err(|e| ImageError::Pack {
            dir: dir.to_owned(),
            source: Box::new(e),
        })
    }

    fn pack_inner(
        &self,
        db: &mut Store,
        dir: &Path,
        opts: &PackOptions,
        created: &mut Created,
    ) -> Result<ImageRecord, ImageError> {
        let meta = fs::metadata(dir).map_err(|e| ImageError::io(dir, e))?;
        if !meta.is_dir() {
            return Err(ImageError::Format("not a directory".into()));
        }
        let staged = tempfile::NamedTempFile::new_in(self.tmp())
            .map_err(|e| ImageError::io(self.tmp(), e))?;
        let gz = flate2::write::GzEncoder::new(
            HashingWriter {
                inner: io::BufWriter::new(
                    staged
                        .as_file()
                        .try_clone()
                        .map_err(|e| ImageError::io(staged.path(), e))?,
                ),
                hash: Sha256::new(),
                count: 0,
            },
            flate2::Compression::fast(),
        );
        let tar_out = HashingWriter {
            inner: gz,
            hash: Sha256::new(),
            count: 0,
        };
        let mut builder = tar::Builder::new(tar_out);
        builder.follow_symlinks(false);
        let mut walker = Walker {
            builder: &mut builder,
            links: HashMap::new(),
            root_dev: meta.dev(),
        };
        walker.walk(dir, Path::new(""))?;
        let tar_out = builder.into_inner().map_err(|e| ImageError::io(dir, e))?;
        let diff_id = finish(tar_out.hash);
        let blob_writer = tar_out
            .inner
            .finish()
            .map_err(|e| ImageError::io(staged.path(), e))?;
        let blob_size = blob_writer.count;
        let blob_digest = finish(blob_writer.hash);
        blob_writer
            .inner
            .into_inner()
            .map_err(|e| ImageError::io(staged.path(), e.into_error()))?;
        let staged_path = staged.into_temp_path();
        let expected = crate::Expected {
            digest: blob_digest.clone(),
            size: Some(blob_size),
        };
        if self.blobs.ingest_staged(&staged_path, &expected)? {
            created.blobs.push(blob_digest.clone());
        }
        let _ = staged_path.close();

        let mut env = vec![format!("PATH={DEFAULT_PATH}")];
        for e in &opts.env {
            if !e.contains('=') {
                return Err(ImageError::Format(format!(
                    "environment entry {e:?} is not KEY=VALUE"
                )));
            }
            if e.starts_with("PATH=") {
                env.remove(0);
            }
            env.push(e.clone());
        }
        let mut cfg = serde_json::json!({ "Env": env });
        if !opts.entrypoint.is_empty() {
            cfg["Entrypoint"] = serde_json::json!(opts.entrypoint);
        }
        if !opts.cmd.is_empty() {
            cfg["Cmd"] = serde_json::json!(opts.cmd);
        }
        if let Some(w) = &opts.workdir {
            cfg["WorkingDir"] = serde_json::json!(w);
        }
        if let Some(u) = &opts.user {
            cfg["User"] = serde_json::json!(u);
        }
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": cfg,
            "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
            "history": [{ "created_by": format!("skiff image pack {}", dir.display()) }],
        });
        let config_bytes = serde_json::to_vec(&config).expect("json values serialize");
        let config_digest = self.ingest_bytes(&config_bytes, created)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::ImageManifest.to_string(),
            "config": {
                "mediaType": MediaType::ImageConfig.to_string(),
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": [{
                "mediaType": MediaType::ImageLayerGzip.to_string(),
                "digest": blob_digest.to_string(),
                "size": blob_size,
            }],
        });
        let manifest_bytes = serde_json::to_vec(&manifest).expect("json values serialize");
        let manifest_digest = self.ingest_bytes(&manifest_bytes, created)?;
        let tags: Vec<ImageRef> = opts.tag.iter().cloned().collect();
        self.install(
            db,
            &manifest_digest,
            &tags,
            &format!("dir:{}", dir.display()),
            created,
        )
    }
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + body.to_string().len();
    if len.to_string().len() + body > len {
        len += 1;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

struct Walker<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    links: HashMap<(u64, u64), PathBuf>,
    root_dev: u64,
}

impl<W: Write> Walker<'_, W> {
    /// Writes a PAX header carrying the file's xattrs (tar's own builder drops them).
    fn append_xattrs(&mut self, path: &Path) -> Result<(), ImageError> {
        let mut names = vec![0u8; 64 * 1024];
        let n = match rustix::fs::listxattr(path, &mut names) {
            Ok(n) => n,
            Err(_) => return Ok(()), // no xattr support here: nothing to keep
        };
        let mut records = Vec::new();
        for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if name.starts_with("trusted.") || name == "security.selinux" {
                continue; // host state, not the file's
            }
            let mut value = vec![0u8; 64 * 1024];
            if let Ok(len) = rustix::fs::getxattr(path, name, &mut value) {
                records.extend(pax_record(&format!("SCHILY.xattr.{name}"), &value[..len]));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("PaxHeaders/xattrs")
            .map_err(|e| ImageError::io(path, e))?;
        h.set_size(records.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.builder
            .append(&h, records.as_slice())
            .map_err(|e| ImageError::io(path, e))
    }

    fn walk(&mut self, abs: &Path, rel: &Path) -> Result<(), ImageError> {
        let mut names: Vec<_> = fs::read_dir(abs)
            .map_err(|e| ImageError::io(abs, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| ImageError::io(abs, e))?;
        names.sort();
        for name in names {
            let path = abs.join(&name);
            let rel_path = rel.join(&name);
            let meta = fs::symlink_metadata(&path).map_err(|e| ImageError::io(&path, e))?;
            let ft = meta.file_type();
            if ft.is_block_device() || ft.is_char_device() || ft.is_socket() {
                return Err(ImageError::Format(format!(
                    "{} is a device or socket, which images may not contain",
                    path.display()
                )));
            }
            if ft.is_file() && meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    let mut h = tar::Header::new_gnu();
                    h.set_metadata(&meta);
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    self.builder
                        .append_link(&mut h, &rel_path, first)
                        .map_err(|e| ImageError::io(&path, e))?;
                    continue;
                }
                self.links.insert(key, rel_path.clone());
            }
            if !ft.is_symlink() {
                self.append_xattrs(&path)?;
            }
            self.builder
                .append_path_with_name(&path, &rel_path)
                .map_err(|e| ImageError::io(&path, e))?;
            if ft.is_dir() && meta.dev() == self.root_dev {
                self.walk(&path, &rel_path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pax_record_length_counts_itself() {
        for (k, v) in [
            ("a", &b"b"[..]),
            ("SCHILY.xattr.user.x", &[7u8; 95][..]),
            ("k", &[1u8; 994][..]),
        ] {
            let r = super::pax_record(k, v);
            let (len, _) = std::str::from_utf8(&r[..r.iter().position(|&b| b == b' ').unwrap()])
                .map(|l| (l.parse::<usize>().unwrap(), ()))
                .unwrap();
            assert_eq!(len, r.len(), "record for {k}");
        }
    }
}
