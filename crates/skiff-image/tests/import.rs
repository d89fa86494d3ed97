//! Import end to end against real producers (skopeo, umoci, buildah, `pack`) and every
//! hostile input the store must refuse without leaving anything behind.

mod fixtures;

use fixtures::*;
use skiff_image::{ImageStore, ImportOptions, PackOptions};
use skiff_store::Store;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

struct Env {
    dir: tempfile::TempDir,
    store: ImageStore,
    db: Store,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let store = ImageStore::open(&home).unwrap();
    let db = Store::open(&home.join("skiff.db")).unwrap();
    Env { dir, store, db }
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn import(
        &mut self,
        p: &Path,
    ) -> Result<Vec<skiff_store::ImageRecord>, skiff_image::ImageError> {
        self.store
            .import(&mut self.db, p, &ImportOptions::default())
    }
    fn count(&self, sub: &str) -> usize {
        std::fs::read_dir(self.path("home").join(sub))
            .unwrap()
            .count()
    }
    /// The store holds nothing: no listed image, no blob, no snapshot, no staging leftovers.
    fn assert_empty(&self) {
        assert!(
            self.db.list_images().unwrap().is_empty(),
            "an image is listed"
        );
        assert_eq!(self.count("blobs/sha256"), 0, "blobs left behind");
        assert_eq!(self.count("snapshots"), 0, "snapshots left behind");
        assert_eq!(self.count("tmp"), 0, "staging left behind");
    }
}

/// Packs an OCI layout directory into an oci-archive, as `skopeo copy … oci-archive:` would.
fn oci_archive(e: &Env, layout: &Path) -> PathBuf {
    let archive = e.path("x.tar");
    sh(
        "tar",
        &[
            "-cf",
            archive.to_str().unwrap(),
            "-C",
            layout.to_str().unwrap(),
            ".",
        ],
    );
    archive
}

fn err_of(r: Result<Vec<skiff_store::ImageRecord>, skiff_image::ImageError>) -> String {
    match r {
        Ok(_) => panic!("hostile import succeeded"),
        Err(e) => e.to_string(),
    }
}

// --- hostile input ------------------------------------------------------------------------

#[test]
fn dotdot_entry_is_refused_with_image_layer_and_entry_named() {
    let mut e = env();
    let layer = Layer::plain(&[E::File("../etc/passwd", b"root::0:0::/:/bin/sh\n")]);
    let blob = sha(&layer.blob);
    let src = layout(&e.path("src"), &[layer], "x");
    let err = err_of(e.import(&src));
    let want = format!(
        "import oci:{}: layer {blob}: entry \"../etc/passwd\" escapes the rootfs",
        src.display()
    );
    assert_eq!(err, want);
    assert!(!e.path("etc/passwd").exists() && !e.path("home/etc").exists());
    e.assert_empty();
}

#[test]
fn absolute_entry_is_refused() {
    let mut e = env();
    let src = layout(
        &e.path("src"),
        &[Layer::plain(&[E::File("/etc/skiff-test-abs", b"x")])],
        "x",
    );
    let err = err_of(e.import(&src));
    assert!(
        err.contains("entry \"/etc/skiff-test-abs\" escapes the rootfs"),
        "{err}"
    );
    assert!(!Path::new("/etc/skiff-test-abs").exists());
    e.assert_empty();
}

#[test]
fn symlink_out_of_rootfs_then_written_through_is_refused() {
    let mut e = env();
    let canary = e.path("canary");
    std::fs::create_dir(&canary).unwrap();
    let target: &'static str = Box::leak(canary.display().to_string().into_boxed_str());
    let src = layout(
        &e.path("src"),
        &[Layer::plain(&[
            E::Symlink("evil", target),
            E::File("evil/owned", b"x"),
        ])],
        "x",
    );
    let err = err_of(e.import(&src));
    assert!(
        err.contains("entry \"evil/owned\" escapes the rootfs through symlink \"evil\""),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&canary).unwrap().count(),
        0,
        "wrote through the symlink"
    );
    e.assert_empty();
}

#[test]
fn relative_symlink_escape_is_refused() {
    let mut e = env();
    let src = layout(
        &e.path("src"),
        &[Layer::plain(&[
            E::Dir("a"),
            E::Symlink("a/up", "../../.."),
            E::File("a/up/owned", b"x"),
        ])],
        "x",
    );
    let err = err_of(e.import(&src));
    assert!(
        err.contains("entry \"a/up/owned\" escapes the rootfs through symlink"),
        "{err}"
    );
    assert!(!e.path("owned").exists());
    e.assert_empty();
}

#[test]
fn hardlink_out_of_rootfs_is_refused() {
    let mut e = env();
    let src = layout(
        &e.path("src"),
        &[Layer::plain(&[E::Hardlink(
            "shadow",
            "../../../../etc/shadow",
        )])],
        "x",
    );
    let err = err_of(e.import(&src));
    assert!(err.contains("entry \"shadow\" is a hardlink to \"../../../../etc/shadow\", which escapes the rootfs"), "{err}");
    e.assert_empty();
}

#[test]
fn hardlink_through_escaping_symlink_is_refused() {
    let mut e = env();
    let src = layout(
        &e.path("src"),
        &[Layer::plain(&[
            E::Symlink("etc", "/etc"),
            E::Hardlink("pw", "etc/passwd"),
        ])],
        "x",
    );
    let err = err_of(e.import(&src));
    assert!(
        err.contains("entry \"pw\" is a hardlink to \"etc/passwd\", which escapes the rootfs"),
        "{err}"
    );
    e.assert_empty();
}

#[test]
fn device_nodes_are_skipped_named_and_never_created() {
    let mut e = env();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    e.store = e.store.clone().with_progress(std::sync::Arc::new(move |p| {
        if let skiff_image::Progress::Skipped { entry, kind, .. } = p {
            record.lock().unwrap().push(format!("{entry} ({kind})"));
        }
    }));
    let src = layout(
        &e.path("src"),
        &[Layer::plain(&[
            E::Dir("dev"),
            E::CharDev("dev/console"),
            E::File("etc-marker", b"kept"),
        ])],
        "x",
    );
    let img = e.import(&src).unwrap().remove(0);
    assert_eq!(*seen.lock().unwrap(), ["dev/console (character)"]);
    let layers = e.store.rootfs_layers(&img);
    assert!(layers[0].join("dev").is_dir(), "the directory stays");
    assert!(
        std::fs::symlink_metadata(layers[0].join("dev/console")).is_err(),
        "no device node on disk"
    );
    assert_eq!(
        std::fs::read(layers[0].join("etc-marker")).unwrap(),
        b"kept"
    );
}

#[test]
fn decompression_bomb_stops_at_the_limit() {
    let mut e = env();
    e.store = e.store.clone().with_max_unpacked(1 << 20);
    let zeros: &'static [u8] = Box::leak(vec![0u8; 8 << 20].into_boxed_slice());
    let layer = Layer::gz(&[E::File("bomb", zeros)]);
    assert!(
        layer.blob.len() < 64 << 10,
        "the bomb should be small compressed"
    );
    let blob = sha(&layer.blob);
    let src = layout(&e.path("src"), &[layer], "x");
    let err = err_of(e.import(&src));
    assert!(
        err.contains(&format!(
            "layer {blob}: uncompressed size exceeds the limit of 1048576 bytes"
        )),
        "{err}"
    );
    e.assert_empty();
}

#[test]
fn truncated_layer_is_refused() {
    let mut e = env();
    let src = layout(&e.path("src"), &[Layer::plain(&[E::Truncated("big")])], "x");
    let err = err_of(e.import(&src));
    assert!(
        err.contains("layer sha256:")
            && (err.contains("reading archive") || err.contains("entry \"big\"")),
        "{err}"
    );
    e.assert_empty();
}

#[test]
fn truncated_archive_is_refused() {
    let mut e = env();
    let src = layout(
        &e.path("src"),
        &[Layer::plain(&[E::File("a", b"hello")])],
        "x",
    );
    let archive = oci_archive(&e, &src);
    let len = std::fs::metadata(&archive).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap();
    f.set_len(len / 2).unwrap();
    let err = err_of(e.import(&archive));
    assert!(
        err.starts_with(&format!("import oci-archive:{}: ", archive.display())),
        "{err}"
    );
    assert!(
        err.contains("is missing") || err.contains("reading archive"),
        "{err}"
    );
    assert!(!err.contains("/home/tmp/"), "staging path leaked: {err}");
    e.assert_empty();
}

#[test]
fn wrong_blob_digest_is_refused() {
    let mut e = env();
    let layer = Layer::plain(&[E::File("a", b"hello")]);
    let blob = sha(&layer.blob);
    let src = layout(&e.path("src"), &[layer], "x");
    // Tamper with the layer blob after the manifest recorded its digest.
    let p = src.join("blobs/sha256").join(&blob[7..]);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
    let err = err_of(e.import(&src));
    assert!(
        err.contains(&format!("blob {blob}: content has digest sha256:")),
        "{err}"
    );
    e.assert_empty();
}

#[test]
fn wrong_diff_id_is_refused() {
    let mut e = env();
    let mut layer = Layer::gz(&[E::File("a", b"hello")]);
    layer.diff_id = sha(b"something else");
    let src = layout(&e.path("src"), &[layer], "x");
    let err = err_of(e.import(&src));
    assert!(
        err.contains("uncompressed content has digest")
            && err.contains("but the image config says"),
        "{err}"
    );
    e.assert_empty();
}

#[test]
fn failed_import_keeps_layers_of_existing_images() {
    let mut e = env();
    let base = || Layer::gz(&[E::Dir("etc"), E::File("etc/os", b"base\n")]);
    let good = layout(&e.path("good"), &[base()], "good");
    e.import(&good).unwrap();
    let bad = layout(
        &e.path("bad"),
        &[base(), Layer::plain(&[E::File("../x", b"x")])],
        "bad",
    );
    err_of(e.import(&bad));
    assert_eq!(e.db.list_images().unwrap().len(), 1);
    assert_eq!(
        e.count("snapshots"),
        1,
        "the shared base snapshot must survive"
    );
    assert_eq!(e.count("tmp"), 0);
}

// --- formats and semantics ----------------------------------------------------------------

#[test]
fn whiteouts_and_opaque_dirs_become_overlay_format() {
    let mut e = env();
    let lower = Layer::gz(&[
        E::Dir("etc"),
        E::File("etc/keep", b"k"),
        E::File("etc/gone", b"g"),
        E::Dir("var"),
        E::File("var/old", b"o"),
    ]);
    let upper = Layer::zst(&[
        E::File("etc/.wh.gone", b""),
        E::Dir("var"),
        E::File("var/.wh..wh..opq", b""),
        E::File("var/new", b"n"),
    ]);
    let src = layout(&e.path("src"), &[lower, upper], "x");
    let img = e.import(&src).unwrap().remove(0);
    let layers = e.store.rootfs_layers(&img);
    let top = &layers[0];
    let wh = std::fs::symlink_metadata(top.join("etc/gone")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0:0 char device"
    );
    let mut buf = [0u8; 1];
    let n = rustix::fs::getxattr(top.join("var"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    // Mount the stack as the sandbox will and look at the merged view.
    let merged = e.path("merged");
    std::fs::create_dir(&merged).unwrap();
    let lowerdir = layers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    sh(
        "mount",
        &[
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!("lowerdir={lowerdir}"),
            merged.to_str().unwrap(),
        ],
    );
    let seen = (
        merged.join("etc/keep").exists(),
        merged.join("etc/gone").exists(),
        merged.join("var/old").exists(),
        merged.join("var/new").exists(),
    );
    sh("umount", &[merged.to_str().unwrap()]);
    assert_eq!(seen, (true, false, false, true));
}

#[test]
fn hardlink_to_lower_layer_file_is_copied_up() {
    let mut e = env();
    let lower = Layer::plain(&[E::Dir("bin"), E::File("bin/tool", b"#!tool")]);
    let upper = Layer::plain(&[E::Hardlink("bin/alias", "bin/tool")]);
    let src = layout(&e.path("src"), &[lower, upper], "x");
    let img = e.import(&src).unwrap().remove(0);
    let top = &e.store.rootfs_layers(&img)[0];
    let a = std::fs::metadata(top.join("bin/alias")).unwrap();
    let t = std::fs::metadata(top.join("bin/tool")).unwrap();
    assert_eq!(a.ino(), t.ino());
    assert_eq!(std::fs::read(top.join("bin/alias")).unwrap(), b"#!tool");
}

#[test]
fn multi_platform_index_picks_linux_amd64() {
    let mut e = env();
    let dir = e.path("multi");
    std::fs::create_dir_all(&dir).unwrap();
    let (arm, arm_size) =
        write_manifest(&dir, &[Layer::plain(&[E::File("arch", b"arm64")])], "arm64");
    let (amd, amd_size) =
        write_manifest(&dir, &[Layer::plain(&[E::File("arch", b"amd64")])], "amd64");
    let nested = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": arm_size, "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": amd_size, "platform": {"os": "linux", "architecture": "amd64"}},
    ]});
    let nb = serde_json::to_vec(&nested).unwrap();
    let nd = write_blob(&dir, &nb);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nd, "size": nb.len(),
         "annotations": {"org.opencontainers.image.ref.name": "multi:1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let img = e.import(&dir).unwrap().remove(0);
    assert_eq!(img.digest.to_string(), amd);
    assert_eq!(img.tags, vec!["multi:1"]);
    let top = &e.store.rootfs_layers(&img)[0];
    assert_eq!(std::fs::read(top.join("arch")).unwrap(), b"amd64");
}

#[test]
fn shared_layers_are_stored_and_unpacked_once() {
    let mut e = env();
    let base = || Layer::gz(&[E::Dir("usr"), E::File("usr/lib", b"shared")]);
    e.import(&layout(
        &e.path("a"),
        &[base(), Layer::plain(&[E::File("a", b"a")])],
        "a:1",
    ))
    .unwrap();
    e.import(&layout(
        &e.path("b"),
        &[base(), Layer::plain(&[E::File("b", b"b")])],
        "b:1",
    ))
    .unwrap();
    assert_eq!(e.count("snapshots"), 3, "base + two tops");
    // manifest+config per image (4) + base + two tops
    assert_eq!(e.count("blobs/sha256"), 7);
    let removed = e.store.remove(&mut e.db, "a:1");
    assert!(removed.is_ok(), "{removed:?}");
    assert_eq!(e.count("snapshots"), 2, "base kept for b");
    e.store.remove(&mut e.db, "b:1").unwrap();
    e.assert_empty();
}

#[test]
fn pack_keeps_modes_owners_links_and_xattrs() {
    let mut e = env();
    let root = e.path("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
    std::os::unix::fs::chown(root.join("bin/app"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(
        root.join("bin/app"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("app", root.join("bin/link")).unwrap();
    std::fs::hard_link(root.join("bin/app"), root.join("bin/hard")).unwrap();
    rustix::fs::setxattr(
        root.join("bin/app"),
        "user.skiff",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let opts = PackOptions {
        tag: Some("packed:1".parse().unwrap()),
        entrypoint: vec!["/bin/app".into()],
        env: vec!["GREETING=hi".into()],
        workdir: Some("/bin".into()),
        ..Default::default()
    };
    let dated = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_600_000_000,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_600_000_000,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        root.join("bin"),
        &dated,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let img = e.store.pack(&mut e.db, &root, &opts).unwrap();
    assert_eq!(img.tags, vec!["packed:1"]);
    let top = &e.store.rootfs_layers(&img)[0];
    assert_eq!(
        std::fs::metadata(top.join("bin")).unwrap().mtime(),
        1_600_000_000,
        "directory mtime kept"
    );
    let m = std::fs::metadata(top.join("bin/app")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4755, 1234, 5678));
    assert_eq!(
        std::fs::read_link(top.join("bin/link")).unwrap(),
        Path::new("app")
    );
    assert_eq!(
        std::fs::metadata(top.join("bin/hard")).unwrap().ino(),
        m.ino()
    );
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(top.join("bin/app"), "user.skiff", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"kept");
    let p = skiff_image::ProcessConfig::from_image(&img).unwrap();
    assert_eq!(p.args, vec!["/bin/app"]);
    assert!(
        p.env.contains(&"GREETING=hi".to_string()) && p.env.iter().any(|v| v.starts_with("PATH="))
    );
    assert_eq!(p.cwd, "/bin");
}

#[test]
fn pack_refuses_device_nodes() {
    let mut e = env();
    let root = e.path("root");
    std::fs::create_dir_all(&root).unwrap();
    sh(
        "mknod",
        &[root.join("null").to_str().unwrap(), "c", "1", "3"],
    );
    let opts = PackOptions {
        tag: Some("x:1".parse().unwrap()),
        ..Default::default()
    };
    let err = e
        .store
        .pack(&mut e.db, &root, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("null") && err.contains("device"), "{err}");
    e.assert_empty();
}

// --- real producers -----------------------------------------------------------------------

fn busybox_root(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    std::fs::write(dir.join("marker"), b"from-producer\n").unwrap();
}

fn umoci_layout(e: &Env) -> PathBuf {
    let lay = e.path("lay");
    let bundle = e.path("bundle");
    let l = format!("{}:base", lay.display());
    sh("umoci", &["init", "--layout", lay.to_str().unwrap()]);
    sh("umoci", &["new", "--image", &l]);
    sh(
        "umoci",
        &["unpack", "--image", &l, bundle.to_str().unwrap()],
    );
    busybox_root(&bundle.join("rootfs"));
    sh(
        "umoci",
        &["repack", "--image", &l, bundle.to_str().unwrap()],
    );
    sh(
        "umoci",
        &["config", "--image", &l, "--config.entrypoint", "/bin/sh"],
    );
    lay
}

fn assert_marker(e: &Env, img: &skiff_store::ImageRecord) {
    let layers = e.store.rootfs_layers(img);
    let found = layers
        .iter()
        .any(|l| std::fs::read(l.join("marker")).is_ok_and(|b| b == b"from-producer\n"));
    assert!(found, "marker file not in any layer");
}

#[test]
fn imports_umoci_layout() {
    let mut e = env();
    let lay = umoci_layout(&e);
    let opts = ImportOptions {
        tag: Some("umoci:1".parse().unwrap()),
        select: Some("base".into()),
    };
    let img = e.store.import(&mut e.db, &lay, &opts).unwrap().remove(0);
    assert_eq!(img.tags, vec!["umoci:1"]);
    assert_eq!(
        skiff_image::ProcessConfig::from_image(&img).unwrap().args,
        vec!["/bin/sh"]
    );
    assert_marker(&e, &img);
}

#[test]
fn imports_skopeo_oci_archive_and_docker_archive() {
    let mut e = env();
    let lay = umoci_layout(&e);
    let oci = e.path("img-oci.tar");
    let docker = e.path("img-docker.tar");
    sh(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:base", lay.display()),
            &format!("oci-archive:{}:skopeo:oci", oci.display()),
        ],
    );
    sh(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:base", lay.display()),
            &format!("docker-archive:{}:skopeo:docker", docker.display()),
        ],
    );
    let a = e.import(&oci).unwrap().remove(0);
    assert!(a.source.starts_with("oci-archive:"), "{}", a.source);
    assert_marker(&e, &a);
    let b = e.import(&docker).unwrap().remove(0);
    assert_eq!(b.tags, vec!["skopeo:docker"]);
    assert!(b.source.starts_with("docker-archive:"), "{}", b.source);
    assert_marker(&e, &b);
    // Same layer content through two formats: unpacked once.
    assert_eq!(
        a.layers.last().unwrap().chain_id,
        b.layers.last().unwrap().chain_id
    );
}

#[test]
fn imports_buildah_oci_archive() {
    let mut e = env();
    let root = e.path("broot");
    busybox_root(&root);
    let storage = e.path("containers");
    let (gr, rr) = (
        format!("--root={}/root", storage.display()),
        format!("--runroot={}/run", storage.display()),
    );
    let common = [gr.as_str(), rr.as_str(), "--storage-driver=vfs"];
    let run = |args: &[&str]| {
        let mut all = common.to_vec();
        all.extend_from_slice(args);
        sh("buildah", &all).trim().to_owned()
    };
    let ctr = run(&["from", "scratch"]);
    run(&["copy", &ctr, &format!("{}/", root.display()), "/"]);
    run(&["config", "--entrypoint", "[\"/bin/sh\"]", &ctr]);
    let archive = e.path("buildah.tar");
    run(&[
        "commit",
        "--format",
        "oci",
        &ctr,
        &format!("oci-archive:{}:buildah:1", archive.display()),
    ]);
    run(&["rm", &ctr]);
    let img = e.import(&archive).unwrap().remove(0);
    assert_eq!(
        skiff_image::ProcessConfig::from_image(&img).unwrap().args,
        vec!["/bin/sh"]
    );
    assert_marker(&e, &img);
}

#[test]
fn corrupt_archive_is_refused() {
    let mut e = env();
    let archive = e.path("garbage.tar");
    let noise: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&archive, noise).unwrap();
    let err = err_of(e.import(&archive));
    assert!(
        err.starts_with(&format!("import {}: ", archive.display())),
        "{err}"
    );
    assert!(
        err.chars().all(|c| c == ' ' || c.is_ascii_graphic()),
        "garbage in the message: {err:?}"
    );
    e.assert_empty();
}

#[test]
fn hostile_oci_archive_error_names_archive_layer_and_entry() {
    let mut e = env();
    let layer = Layer::gz(&[E::File("../etc/passwd", b"x")]);
    let blob = sha(&layer.blob);
    let src = layout(&e.path("src"), &[layer], "x");
    let archive = oci_archive(&e, &src);
    let err = err_of(e.import(&archive));
    assert_eq!(
        err,
        format!(
            "import oci-archive:{}: layer {blob}: entry \"../etc/passwd\" escapes the rootfs",
            archive.display()
        )
    );
    e.assert_empty();
}

#[test]
fn imports_gzip_compressed_docker_archive() {
    let mut e = env();
    let lay = umoci_layout(&e);
    let docker = e.path("d.tar");
    sh(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:base", lay.display()),
            &format!("docker-archive:{}:zipped:1", docker.display()),
        ],
    );
    let gz = e.path("d.tar.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&docker).unwrap())).unwrap();
    let img = e.import(&gz).unwrap().remove(0);
    assert_eq!(img.tags, vec!["zipped:1"]);
    assert_marker(&e, &img);
}

/// `docker save a b` writes each layer once and names it from both images' entries.
#[test]
fn a_docker_archive_of_two_images_sharing_layers_imports_both() {
    let mut e = env();
    let lay = umoci_layout(&e);
    let single = e.path("one.tar");
    sh(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:base", lay.display()),
            &format!("docker-archive:{}:first:1", single.display()),
        ],
    );
    // The same archive with a second manifest entry on the same config and layers.
    let double = e.path("two.tar");
    let mut out = tar::Builder::new(std::fs::File::create(&double).unwrap());
    let mut input = tar::Archive::new(std::fs::File::open(&single).unwrap());
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
        if entry.path().unwrap().to_str() == Some("manifest.json") {
            let mut entries: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
            let mut second = entries[0].clone();
            second["RepoTags"] = serde_json::json!(["second:1"]);
            entries.push(second);
            body = serde_json::to_vec(&entries).unwrap();
            header.set_size(body.len() as u64);
            header.set_cksum();
        }
        out.append(&header, body.as_slice()).unwrap();
    }
    out.into_inner().unwrap();
    let images = e.import(&double).unwrap();
    assert_eq!(images.len(), 2);
    // Same config and layers: one image, known by both names.
    assert_eq!(images[0].digest, images[1].digest);
    assert_eq!(images[1].tags, ["first:1", "second:1"]);
    assert_marker(&e, &images[1]);
}
