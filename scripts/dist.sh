#!/usr/bin/env bash
# One router tarball: target/dist/wasmgate-<version>-<TARGET>.tar.gz, laid
# out to be unpacked at / (docs/routers.md):
#
#   usr/bin/wasmgate                        the runtime-only host (make cross)
#   usr/share/wasmgate/plugins/<name>.aot   the bundled plugins, precompiled
#   usr/share/wasmgate/packages/            (packages given to bundle; none here)
#   etc/wasmgate/config.yaml                the default config, bundled
#   lib/systemd/system/wasmgate.service     systemd unit
#   etc/init.d/wasmgate                     OpenWrt procd init script
#   usr/share/doc/wasmgate/routers.md
#
#   scripts/dist.sh TARGET
#
# The artefacts are signed with DIST_KEY (default target/dist/compile.key,
# made on first use): a router maker sets DIST_KEY to their own key, whose
# public key the bundled config trusts under trust.compilers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target=${1:?usage: scripts/dist.sh TARGET}
full=target/release/wasmgate
bin=target/$target/router/wasmgate
config=${DIST_CONFIG:-config.yaml}
key=${DIST_KEY:-target/dist/compile.key}
for f in "$full" "$bin"; do
	[ -x "$f" ] || { echo "dist: $f is missing (make build, make cross)" >&2; exit 1; }
done
mkdir -p target/dist
[ -f "$key" ] || "$full" package keygen --out "$key" >/dev/null

version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
name=wasmgate-$version-$target
stage=target/dist/$name
rm -rf "$stage"
mkdir -p "$stage/usr/bin" "$stage/etc/wasmgate" "$stage/lib/systemd/system" \
	"$stage/etc/init.d" "$stage/usr/share/doc/wasmgate"

"$full" bundle --config "$config" --target "$target" --key "$key" \
	--out "$stage/usr/share/wasmgate" --data-dir /var/lib/wasmgate \
	--plugins-dir /usr/share/wasmgate/plugins --router-profile
mv "$stage/usr/share/wasmgate/config.yaml" "$stage/etc/wasmgate/config.yaml"
chmod 0644 "$stage"/usr/share/wasmgate/plugins/*.aot "$stage/etc/wasmgate/config.yaml"
install -m 0755 "$bin" "$stage/usr/bin/wasmgate"
install -m 0644 dist/wasmgate.service "$stage/lib/systemd/system/wasmgate.service"
install -m 0755 dist/wasmgate.init "$stage/etc/init.d/wasmgate"
install -m 0644 docs/routers.md "$stage/usr/share/doc/wasmgate/routers.md"

tar -C target/dist --owner=0 --group=0 -czf "target/dist/$name.tar.gz" "$name"
echo "dist: target/dist/$name.tar.gz ($(stat -c %s "target/dist/$name.tar.gz") bytes)"
