#!/usr/bin/env bash
# Builds the hello app and packs it into the image hello:latest with `skiff image pack`
# (no registry, no network). Usage: bash examples/hello/pack.sh [SKIFF_BINARY]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
skiff="${1:-$here/../../target/release/skiff}"
bin="$(bash "$here/build.sh")"
root="$(mktemp -d)"; trap 'rm -rf "$root"' EXIT
install -m 0755 "$bin" "$root/hello"
mkdir -p "$root/etc" "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\napp:x:1000:1000:app:/tmp:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' > "$root/etc/group"
"$skiff" image pack "$root" --tag hello:latest --user app --entrypoint /hello
