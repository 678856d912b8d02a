#!/usr/bin/env bash
# Builds the runtime-only host (no compiler: precompiled plugins only) for
# one router target, statically linked, into target/<TARGET>/router/wasmgate.
#
#   scripts/cross.sh TARGET [FEATURES]
#
# TARGET: aarch64-unknown-linux-musl, armv7-unknown-linux-gnueabihf,
# x86_64-unknown-linux-musl (the targets CI builds and tests), or any target
# whose Rust standard library and C cross compiler are installed.
# FEATURES: the capabilities to build in (default: net,wireguard,outbound;
# an empty string for none).
#
# C cross compilers come from Debian (gcc-aarch64-linux-gnu,
# gcc-arm-linux-gnueabihf); ring and wasmtime build a little C with them, and
# they link. The musl targets link Rust's own musl statically; armv7 links
# glibc statically (+crt-static), since rustup offers no armv7 musl standard
# library here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target=${1:?usage: scripts/cross.sh TARGET [FEATURES]}
features=${2-net,wireguard,outbound}
CARGO=${CARGO:-cargo}

# The C compiler (and linker) for the target.
case "$target" in
aarch64-*) cc=aarch64-linux-gnu-gcc ;;
armv7-* | arm-*) cc=arm-linux-gnueabihf-gcc ;;
x86_64-*) cc=gcc ;;
*) echo "cross: no C cross compiler known for $target" >&2; exit 1 ;;
esac
command -v "$cc" >/dev/null || { echo "cross: $cc not found (Debian: gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf)" >&2; exit 1; }
if ! rustup target list --installed | grep -qx "$target"; then
	rustup target add "$target"
fi

var=$(echo "$target" | tr 'a-z-' 'A-Z_')
export "CC_${target//-/_}=$cc"
export "AR_${target//-/_}=${cc%gcc}ar"
export "CARGO_TARGET_${var}_LINKER=$cc"
case "$target" in
*-gnu*) export "CARGO_TARGET_${var}_RUSTFLAGS=-C target-feature=+crt-static" ;;
esac

"$CARGO" build --profile router --target "$target" -p wasmgate --no-default-features ${features:+--features "$features"}
bin=target/$target/router/wasmgate
echo "cross: $bin $(stat -c %s "$bin") bytes"
