#!/usr/bin/env bash
# The dist tarball of TARGET (default x86_64-unknown-linux-musl, which runs
# here natively), unpacked into a temp root:
#   - the systemd unit passes `systemd-analyze verify` (pointed at the
#     unpacked binary);
#   - the procd init script passes `sh -n`, and its start_service, run with
#     recording stubs of procd's functions, gives a command line that, run
#     as it is, serves the bundled plugins from their artefacts (the
#     bundled config's ports swapped for free ones); its reload_service
#     asks procd for SIGHUP. procd itself is not run.
#
#   tests/routers/packaging.sh [TARGET]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

target=${1:-x86_64-unknown-linux-musl}
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
tarball=target/dist/wasmgate-$version-$target.tar.gz
[ -f "$tarball" ] || { echo "packaging: $tarball is missing (make dist)" >&2; exit 1; }

root=$(mktemp -d)
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$root"
}
trap cleanup EXIT
fail() { echo "packaging ($target): FAILED: $*" >&2; exit 1; }

tar -C "$root" -xzf "$tarball"
top=$root/wasmgate-$version-$target
for f in usr/bin/wasmgate etc/wasmgate/config.yaml lib/systemd/system/wasmgate.service \
	etc/init.d/wasmgate usr/share/doc/wasmgate/routers.md; do
	[ -e "$top/$f" ] || fail "$f is not in the tarball"
done
ls "$top"/usr/share/wasmgate/plugins/*.aot >/dev/null || fail "no artefacts in the tarball"
grep -q "profile: router" "$top/etc/wasmgate/config.yaml" || fail "the config is not on the router profile"

# systemd: the unit as shipped, its paths pointed into the temp root.
if command -v systemd-analyze >/dev/null; then
	sed "s|/usr/bin/wasmgate|$top/usr/bin/wasmgate|; s|/etc/wasmgate|$top/etc/wasmgate|" \
		"$top/lib/systemd/system/wasmgate.service" >"$root/wasmgate.service"
	systemd-analyze verify "$root/wasmgate.service" 2>"$root/verify.log" || {
		cat "$root/verify.log" >&2
		fail "systemd-analyze verify"
	}
	# verify prints warnings without failing: none is expected.
	if grep -v -e '^$' "$root/verify.log" | grep -q .; then
		cat "$root/verify.log" >&2
		fail "systemd-analyze verify warned"
	fi
	echo "packaging ($target): systemd unit verified"
else
	fail "systemd-analyze not found (Debian's systemd)"
fi

# procd: syntax, then start_service against stubs.
sh -n "$top/etc/init.d/wasmgate" || fail "sh -n"
data=$root/data
config=$root/config.yaml
cp "$top/etc/wasmgate/config.yaml" "$config"
# The bundled config's artefacts are at /usr/share/...: point at the unpacked ones.
sed -i "s|/usr/share/wasmgate/plugins|$top/usr/share/wasmgate/plugins|" "$config"
# Free loopback ports for each listen address of the config.
for listen in $(grep -o '127\.0\.0\.1:[0-9]*' "$config" | sort -u); do
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	sed -i "s|$listen\b|127.0.0.1:$port|g" "$config"
done

cat >"$root/stubs.sh" <<EOF
# Recording stubs of the procd helpers an init script calls.
calls=$root/calls
procd_open_instance() { echo open >>"\$calls"; }
procd_close_instance() { echo close >>"\$calls"; }
procd_set_param() {
	key=\$1; shift
	if [ "\$key" = command ]; then printf '%s\n' "\$@" >"$root/command"; fi
	echo "param \$key \$*" >>"\$calls"
}
procd_send_signal() { echo "signal \$*" >>"\$calls"; }
EOF
sh -c ". '$root/stubs.sh'; . '$top/etc/init.d/wasmgate'; PROG='$top/usr/bin/wasmgate'; CONFIG='$config'; DATA_DIR='$data'; start_service; reload_service" \
	|| fail "start_service"
grep -qx open "$root/calls" && grep -qx close "$root/calls" || fail "no instance opened and closed"
grep -q "^param respawn" "$root/calls" || fail "no respawn"
grep -qx "signal wasmgate \* HUP" "$root/calls" || fail "reload_service does not send HUP: $(cat "$root/calls")"
[ "$(stat -c %a "$data")" = 700 ] || fail "the data dir is not 0700"

mapfile -t cmd <"$root/command"
[ "${cmd[0]}" = "$top/usr/bin/wasmgate" ] || fail "command: ${cmd[*]}"
"${cmd[@]}" >"$root/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
	grep -qx ready "$root/server.log" && break
	kill -0 "$pid" 2>/dev/null || { cat "$root/server.log" >&2; fail "the procd command exited"; }
	sleep 0.1
done
grep -qx ready "$root/server.log" || fail "not ready in 10 s"
grep -q "compiling" "$root/server.log" && fail "the bundle compiled something at start"
hello=$(grep -o 'http://127\.0\.0\.1:[0-9]*/hello/' "$root/server.log" | head -n1)
[ -n "$hello" ] || fail "no hello listener: $(cat "$root/server.log")"
curl -sSf "$hello" | grep -q '"message"' || fail "hello did not answer"
[ -f "$data/admin.token" ] || fail "no admin token in the procd data dir"
echo "packaging ($target): procd start_service runs a server that serves the bundle"
