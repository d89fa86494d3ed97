//! End-to-end: `skiff image import` of layouts as image builders make them.

#[path = "../../skiff-image/tests/fixtures/mod.rs"]
mod fixtures;

use fixtures::{layout, Layer, E};
use std::process::Command;

#[test]
fn a_layer_with_device_nodes_imports_with_a_warning_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // As debootstrap and mmdebstrap leave /dev in every rootfs.
    let src = layout(
        &dir.path().join("src"),
        &[Layer::plain(&[
            E::Dir("dev"),
            E::CharDev("dev/console"),
            E::CharDev("dev/null"),
            E::Dir("etc"),
            E::File("etc/hostname", b"debian\n"),
        ])],
        "x",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--home", home.to_str().unwrap()])
        .args(["image", "import", src.to_str().unwrap(), "--tag", "deb:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for node in ["dev/console", "dev/null"] {
        assert!(
            stderr.contains(&format!("skipped {node}, a character device node")),
            "{stderr}"
        );
    }
    let listed = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--home", home.to_str().unwrap(), "image", "ls"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("deb:1"));
}

#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    // `skiff image ls | head -0`: the reader is gone before the table is written.
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--home", dir.path().join("home").to_str().unwrap()])
        .args(["image", "ls"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}
