//! Image rows: an image is listed only once all its blobs are stored and its layers
//! unpacked, because the caller inserts it in one transaction at the very end of import.

use crate::{now_unix, Store, StoreError};
use rusqlite::{params, OptionalExtension, Transaction};
use skiff_core::{Digest, ImageRef};

/// One layer of an image, bottom first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the blob as stored (compressed, if it was).
    pub blob_digest: Digest,
    /// The blob's OCI media type.
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Chain id: identifies this layer stacked on all below it, and names its snapshot.
    pub chain_id: Digest,
}

/// An image to insert.
#[derive(Clone, Debug)]
pub struct NewImage {
    /// Manifest digest: the image's identity.
    pub digest: Digest,
    /// Digest of the config blob.
    pub config_digest: Digest,
    /// The config blob, for `inspect` and for starting instances without reading blobs.
    pub config_json: String,
    /// Where it came from, e.g. `oci-archive:/tmp/x.tar`.
    pub source: String,
    /// Manifest + config + layer blob sizes.
    pub size: u64,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
}

/// A stored image with its tags and layers.
#[derive(Clone, Debug)]
pub struct ImageRecord {
    /// Manifest digest.
    pub digest: Digest,
    /// Config blob digest.
    pub config_digest: Digest,
    /// The image config (OCI JSON).
    pub config_json: String,
    /// Where it was imported from.
    pub source: String,
    /// Total size of its blobs.
    pub size: u64,
    /// Unix time of import.
    pub created_at: i64,
    /// Tags pointing at it, sorted.
    pub tags: Vec<String>,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
}

/// What removing an image freed: blobs and snapshots no other image still uses. The
/// caller deletes them from disk after the row is gone, so a crash in between leaves
/// only unreferenced files, never a listed image missing its files.
#[derive(Clone, Debug, Default)]
pub struct RemovedImage {
    /// The removed image, if the image itself went (not just a tag).
    pub digest: Option<Digest>,
    /// Blobs no longer referenced.
    pub orphan_blobs: Vec<Digest>,
    /// Snapshots (by chain id) no longer referenced.
    pub orphan_snapshots: Vec<Digest>,
}

fn parse_digest(value: String) -> Result<Digest, StoreError> {
    value.parse().map_err(|_| StoreError::Corrupt {
        what: "digest",
        value,
    })
}

impl Store {
    /// Inserts an image (or refreshes an existing one with the same digest) and points
    /// `tags` at it, moving each tag away from any image that had it.
    pub fn insert_image(&mut self, image: &NewImage, tags: &[ImageRef]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO images (digest, config_digest, config_json, source, size, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(digest) DO UPDATE SET source = excluded.source",
            params![
                image.digest.to_string(),
                image.config_digest.to_string(),
                image.config_json,
                image.source,
                image.size as i64,
                now_unix()
            ],
        )?;
        tx.execute(
            "DELETE FROM image_layers WHERE digest = ?1",
            [image.digest.to_string()],
        )?;
        for (i, l) in image.layers.iter().enumerate() {
            tx.execute(
                "INSERT INTO image_layers (digest, position, blob_digest, media_type, size, diff_id, chain_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    image.digest.to_string(),
                    i as i64,
                    l.blob_digest.to_string(),
                    l.media_type,
                    l.size as i64,
                    l.diff_id.to_string(),
                    l.chain_id.to_string()
                ],
            )?;
        }
        for tag in tags {
            tx.execute(
                "INSERT INTO image_tags (name, digest) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET digest = excluded.digest",
                params![tag.to_string(), image.digest.to_string()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every image, newest first.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT digest FROM images ORDER BY created_at DESC, digest")?;
        let digests = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        digests
            .into_iter()
            .map(|d| self.load_image(&parse_digest(d)?))
            .collect()
    }

    /// Finds the image a user means by `reference`: a tag (`name[:tag]`), a full digest,
    /// or a unique prefix of at least 4 hex digits of one.
    pub fn resolve_image(&self, reference: &str) -> Result<ImageRecord, StoreError> {
        let not_found = || StoreError::NoSuchImage(reference.to_owned());
        match reference.parse::<ImageRef>() {
            Ok(ImageRef::Digest(d)) => {
                return self.find_by_digest(&d)?.ok_or_else(not_found);
            }
            Ok(tag @ ImageRef::Tag { .. }) => {
                let hit: Option<String> = self
                    .conn
                    .query_row(
                        "SELECT digest FROM image_tags WHERE name = ?1",
                        [tag.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(d) = hit {
                    return self.load_image(&parse_digest(d)?);
                }
            }
            Err(_) => {}
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT digest FROM images WHERE substr(digest, 8, ?1) = ?2 LIMIT 2")?;
        let hits = stmt
            .query_map(params![hex.len() as i64, hex.to_ascii_lowercase()], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        match hits.as_slice() {
            [one] => self.load_image(&parse_digest(one.clone())?),
            [] => Err(not_found()),
            _ => Err(StoreError::AmbiguousImage(reference.to_owned())),
        }
    }

    fn find_by_digest(&self, digest: &Digest) -> Result<Option<ImageRecord>, StoreError> {
        let exists: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM images WHERE digest = ?1",
                [digest.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        exists.map(|_| self.load_image(digest)).transpose()
    }

    fn load_image(&self, digest: &Digest) -> Result<ImageRecord, StoreError> {
        let (config_digest, config_json, source, size, created_at) = self.conn.query_row(
            "SELECT config_digest, config_json, source, size, created_at FROM images WHERE digest = ?1",
            [digest.to_string()],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )?;
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM image_tags WHERE digest = ?1 ORDER BY name")?;
        let tags = stmt
            .query_map([digest.to_string()], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT blob_digest, media_type, size, diff_id, chain_id FROM image_layers
             WHERE digest = ?1 ORDER BY position",
        )?;
        let rows = stmt
            .query_map([digest.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let layers = rows
            .into_iter()
            .map(|(blob, media_type, size, diff, chain)| {
                Ok(LayerRecord {
                    blob_digest: parse_digest(blob)?,
                    media_type,
                    size: size as u64,
                    diff_id: parse_digest(diff)?,
                    chain_id: parse_digest(chain)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ImageRecord {
            digest: digest.clone(),
            config_digest: parse_digest(config_digest)?,
            config_json,
            source,
            size: size as u64,
            created_at,
            tags,
            layers,
        })
    }

    /// Removes what `reference` names. A tag is untagged, and the image goes only if that
    /// was its last tag; a digest removes the image and all its tags. Refused while a
    /// running instance uses the image.
    pub fn remove_image(&mut self, reference: &str) -> Result<RemovedImage, StoreError> {
        let image = self.resolve_image(reference)?;
        let tx = self.conn.transaction()?;
        if let Ok(tag @ ImageRef::Tag { .. }) = reference.parse::<ImageRef>() {
            let tag = tag.to_string();
            if image.tags.contains(&tag) && image.tags.len() > 1 {
                tx.execute("DELETE FROM image_tags WHERE name = ?1", [tag])?;
                tx.commit()?;
                return Ok(RemovedImage::default());
            }
        }
        let users = running_users(&tx, &image.digest)?;
        if !users.is_empty() {
            return Err(StoreError::ImageInUse {
                image: image.digest.to_string(),
                instances: users.join(", "),
            });
        }
        let revisions = revision_users(&tx, &image.digest)?;
        if !revisions.is_empty() {
            return Err(StoreError::ImageInRevisions {
                image: image.digest.to_string(),
                revisions: revisions.join(", "),
            });
        }
        tx.execute(
            "DELETE FROM images WHERE digest = ?1",
            [image.digest.to_string()],
        )?;
        let mut removed = RemovedImage {
            digest: Some(image.digest.clone()),
            ..Default::default()
        };
        let mut candidates = vec![image.digest.clone(), image.config_digest.clone()];
        candidates.extend(image.layers.iter().map(|l| l.blob_digest.clone()));
        for blob in candidates {
            if !blob_referenced(&tx, &blob)? && !removed.orphan_blobs.contains(&blob) {
                removed.orphan_blobs.push(blob);
            }
        }
        for layer in &image.layers {
            let used: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM image_layers WHERE chain_id = ?1 LIMIT 1",
                    [layer.chain_id.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if used.is_none() && !removed.orphan_snapshots.contains(&layer.chain_id) {
                removed.orphan_snapshots.push(layer.chain_id.clone());
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Whether any image still references `chain_id`'s snapshot.
    pub fn snapshot_in_use(&self, chain_id: &Digest) -> Result<bool, StoreError> {
        let used: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM image_layers WHERE chain_id = ?1 LIMIT 1",
                [chain_id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(used.is_some())
    }
}

fn blob_referenced(tx: &Transaction<'_>, blob: &Digest) -> Result<bool, StoreError> {
    let s = blob.to_string();
    let hit: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM images WHERE digest = ?1 OR config_digest = ?1
             UNION ALL SELECT 1 FROM image_layers WHERE blob_digest = ?1 LIMIT 1",
            [s],
            |r| r.get(0),
        )
        .optional()?;
    Ok(hit.is_some())
}

fn running_users(tx: &Transaction<'_>, digest: &Digest) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare(
        "SELECT id FROM instances WHERE image_digest = ?1 AND state = 'running' ORDER BY id",
    )?;
    let ids = stmt
        .query_map([digest.to_string()], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

fn revision_users(tx: &Transaction<'_>, digest: &Digest) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        tx.prepare("SELECT name FROM revisions WHERE image_digest = ?1 ORDER BY name")?;
    let names = stmt
        .query_map([digest.to_string()], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::from_sha256_bytes(&[n; 32])
    }

    fn image(n: u8, layers: &[u8]) -> NewImage {
        NewImage {
            digest: d(n),
            config_digest: d(n + 100),
            config_json: "{}".into(),
            source: "test".into(),
            size: 1,
            layers: layers
                .iter()
                .map(|&l| LayerRecord {
                    blob_digest: d(l),
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    size: 1,
                    diff_id: d(l),
                    chain_id: d(l + 50),
                })
                .collect(),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        (dir, s)
    }

    #[test]
    fn resolves_by_tag_digest_and_prefix() {
        let (_d, mut s) = store();
        s.insert_image(&image(1, &[10, 11]), &["app:v1".parse().unwrap()])
            .unwrap();
        assert_eq!(s.resolve_image("app:v1").unwrap().digest, d(1));
        assert_eq!(s.resolve_image(&d(1).to_string()).unwrap().digest, d(1));
        assert_eq!(s.resolve_image("0101").unwrap().digest, d(1));
        assert_eq!(s.resolve_image("app:v1").unwrap().layers.len(), 2);
        assert!(matches!(
            s.resolve_image("app:v2"),
            Err(StoreError::NoSuchImage(_))
        ));
    }

    #[test]
    fn retag_moves_tag() {
        let (_d, mut s) = store();
        let tag: ImageRef = "app".parse().unwrap();
        s.insert_image(&image(1, &[10]), std::slice::from_ref(&tag))
            .unwrap();
        s.insert_image(&image(2, &[10]), std::slice::from_ref(&tag))
            .unwrap();
        assert_eq!(s.resolve_image("app").unwrap().digest, d(2));
        assert!(s.resolve_image("0101").unwrap().tags.is_empty());
    }

    #[test]
    fn remove_reports_only_unshared_blobs_and_snapshots() {
        let (_d, mut s) = store();
        s.insert_image(&image(1, &[10, 11]), &["a".parse().unwrap()])
            .unwrap();
        s.insert_image(&image(2, &[10, 12]), &["b".parse().unwrap()])
            .unwrap();
        let removed = s.remove_image("a").unwrap();
        assert_eq!(removed.digest, Some(d(1)));
        assert!(removed.orphan_blobs.contains(&d(11)));
        assert!(!removed.orphan_blobs.contains(&d(10)), "shared layer freed");
        assert_eq!(removed.orphan_snapshots, vec![d(61)]);
        assert!(s.snapshot_in_use(&d(60)).unwrap());
        assert!(s.resolve_image("a").is_err());
    }

    #[test]
    fn untag_keeps_image_with_other_tags() {
        let (_d, mut s) = store();
        s.insert_image(
            &image(1, &[10]),
            &["a".parse().unwrap(), "b".parse().unwrap()],
        )
        .unwrap();
        let removed = s.remove_image("a").unwrap();
        assert!(removed.digest.is_none());
        assert_eq!(s.resolve_image("b").unwrap().tags, vec!["b:latest"]);
    }
}
