//! Builds the init executable (`init/main.rs`, see `src/init_exe.rs`) with rustc alone:
//! it has no standard library, no libc and no start files, and needs `panic = abort`,
//! which a Cargo profile cannot give one binary of a workspace. On targets it is not
//! written for, nothing is built and sandboxes' inits run inside the daemon's binary.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skiff_init_executable)");
    for source in [
        "init/main.rs",
        "init/sys.rs",
        "src/init.rs",
        "src/probe_wire.rs",
    ] {
        println!("cargo::rerun-if-changed={source}");
    }
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch != "x86_64" || os != "linux" {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let mut command = Command::new(rustc);
    command
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            "skiff_init",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "codegen-units=1",
        ])
        .args(["-C", "debuginfo=0", "-C", "strip=symbols"])
        // Static and not position-independent: nothing to relocate, so the loaded pages
        // stay the memory file's, shared by every init.
        .args([
            "-C",
            "relocation-model=static",
            "-C",
            "target-feature=+crt-static",
        ])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static"])
        .arg("-o")
        .arg(out.join("skiff-init"))
        .arg("init/main.rs");
    if let Ok(linker) = std::env::var("RUSTC_LINKER") {
        command.arg("-C").arg(format!("linker={linker}"));
    }
    let built = command
        .output()
        .expect("running rustc to build the sandbox init executable (init/main.rs)");
    let messages = String::from_utf8_lossy(&built.stderr);
    if !built.status.success() {
        panic!("building the sandbox init executable (init/main.rs) failed:\n{messages}");
    }
    for line in messages.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo::warning=init/main.rs: {line}");
    }
    println!("cargo::rustc-cfg=skiff_init_executable");
}
