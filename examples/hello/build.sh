#!/usr/bin/env bash
# Builds the hello app as one static binary (no libc needed in the image) and prints its
# path. Usage: bash examples/hello/build.sh [TARGET_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${1:-$here/../../target/hello}"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
  --manifest-path "$here/Cargo.toml" --target x86_64-unknown-linux-gnu --target-dir "$target"
echo "$target/x86_64-unknown-linux-gnu/release/hello"
