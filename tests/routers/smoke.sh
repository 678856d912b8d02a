#!/usr/bin/env bash
# The router smoke test: a runtime-only wasmgate built for TARGET serves
# precompiled plugins, run under qemu-user (or natively for this machine's
# architecture), through its real binary and real TCP on loopback.
#
#   tests/routers/smoke.sh TARGET
#
# Needs target/<TARGET>/router/wasmgate (`make cross`), the full host
# target/release/wasmgate (to compile the artefacts), the plugins in
# target/wasm32-wasip2/release/ (`make plugins`) and curl.
#
# Steps: compile hello, hotspot and the test fixture for TARGET with a fresh
# key; start the router binary on them; hello's notes (create, list, get,
# delete); a hotspot voucher created through its API; the fixture's endless
# loop stopped at its deadline while the others still answer; a restart; the
# note and the voucher still there; an artefact of another architecture
# refused with a message naming both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

target=${1:?usage: tests/routers/smoke.sh TARGET}
root=$PWD
bin=$root/target/$target/router/wasmgate
full=$root/target/release/wasmgate
wasm=$root/target/wasm32-wasip2/release
for f in "$bin" "$full" "$wasm/hello.wasm" "$wasm/hotspot.wasm" "$wasm/fixture.wasm"; do
	[ -e "$f" ] || { echo "smoke: $f is missing (make cross, make build)" >&2; exit 1; }
done

case "$target" in
x86_64-*) run=() ;;
aarch64-*) run=(qemu-aarch64-static) ;;
armv7-* | arm-*) run=(qemu-arm-static) ;;
*) echo "smoke: no emulator known for $target" >&2; exit 1 ;;
esac
if [ "${#run[@]}" -gt 0 ] && ! command -v "${run[0]}" >/dev/null; then
	echo "smoke: ${run[0]} not found (Debian's qemu-user-static)" >&2
	exit 1
fi

dir=$(mktemp -d)
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

fail() {
	echo "smoke ($target): FAILED: $*" >&2
	echo "--- server log" >&2
	tail -n 40 "$dir/server.log" >&2 || true
	exit 1
}

# Free loopback ports, one per listener.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
admin=$(port) web=$(port)

"$full" package keygen --out "$dir/compile.key" >"$dir/compile.pub"
pub=$(grep -o 'ed25519:[A-Za-z0-9+/=]*' "$dir/compile.pub" | head -n1)

# The same config compiles the artefacts and serves them (the engine
# settings must agree): the source components first, then the artefacts.
write_config() { # $1: hello's file, $2: hotspot's, $3: the fixture's
	cat >"$dir/config.yaml" <<EOF
data_dir: $dir/data
admin: { listen: "127.0.0.1:$admin" }
runtime: { allocator: on_demand, max_instances: 16 }
trust:
  compilers:
    - { name: smoke, key: "$pub" }
plugins:
  - name: hello
    wasm: $1
    mounts: [{ listen: "127.0.0.1:$web", prefix: /hello/ }]
    grants: { kv: true, config: true, log: true }
    limits: { memory_mb: 32, timeout_ms: 5000 }
    settings: { greeting: hello from $target }
  - name: hotspot
    wasm: $2
    mounts: [{ listen: "127.0.0.1:$web", prefix: /api/ }]
    grants: { kv: true, keys: true, crypto: true, config: true, log: true, net: { links: ["br-guest*"] } }
    limits: { memory_mb: 64, timeout_ms: 10000 }
  - name: fixture
    wasm: $3
    mounts: [{ listen: "127.0.0.1:$web", prefix: /fixture/ }]
    grants: { kv: true, keys: true, crypto: true, config: true, log: true, jobs: true, ratelimit: true, net: { links: [fx-no-link] }, wireguard: { devices: [fx-no-device] } }
    limits: { memory_mb: 32, timeout_ms: 1000 }
EOF
}

write_config "$wasm/hello.wasm" "$wasm/hotspot.wasm" "$wasm/fixture.wasm"
"$full" compile --config "$dir/config.yaml" --target "$target" --key "$dir/compile.key" --out "$dir/aot" >"$dir/compile.log"
cat "$dir/compile.log"
write_config "$dir/aot/hello.aot" "$dir/aot/hotspot.aot" "$dir/aot/fixture.aot"

start() {
	: >"$dir/server.log"
	"${run[@]}" "$bin" serve --config "$dir/config.yaml" --strict >>"$dir/server.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 600); do
		grep -qx ready "$dir/server.log" && return 0
		kill -0 "$pid" 2>/dev/null || fail "the server exited at start"
		sleep 0.1
	done
	fail "no 'ready' in 60 s"
}

stop() {
	kill -TERM "$pid"
	wait "$pid" || fail "the server exited non-zero on SIGTERM"
	pid=""
}

# curl that fails on no answer; prints the body, then the status on its own line.
req() { curl -sS --max-time 30 -w '\n%{http_code}' "$@" || fail "no answer: $*"; }
status() { tail -n1 <<<"$1"; }
body() { sed '$d' <<<"$1"; }
expect() { # $1 answer, $2 status, $3 text the body must hold
	[ "$(status "$1")" = "$2" ] || fail "expected $2, got $(status "$1"): $(body "$1")"
	grep -qF -- "$3" <<<"$(body "$1")" || fail "expected '$3' in: $(body "$1")"
}

start
grep -q "compile" "$dir/server.log" && grep -q "compiling" "$dir/server.log" && fail "the router build compiled something"
base=http://127.0.0.1:$web
token=$(cat "$dir/data/admin.token")
auth="Authorization: Bearer $token"

a=$(req "$base/hello/")
expect "$a" 200 "hello from $target"
a=$(req -X POST "$base/hello/notes" -H 'content-type: application/json' -d '{"title":"kept","body":"across restarts"}')
expect "$a" 201 '"title":"kept"'
kept=$(body "$a" | grep -o '"id":"[0-9]*"' | head -n1 | cut -d'"' -f4)
a=$(req -X POST "$base/hello/notes" -H 'content-type: application/json' -d '{"title":"gone","body":"deleted"}')
expect "$a" 201 '"title":"gone"'
gone=$(body "$a" | grep -o '"id":"[0-9]*"' | head -n1 | cut -d'"' -f4)
a=$(req "$base/hello/notes")
expect "$a" 200 '"title":"gone"'
a=$(req "$base/hello/notes/$gone")
expect "$a" 200 '"body":"deleted"'
a=$(req -X DELETE "$base/hello/notes/$gone")
[ "$(status "$a")" = 204 ] || [ "$(status "$a")" = 200 ] || fail "delete: $(status "$a")"
a=$(req "$base/hello/notes/$gone")
expect "$a" 404 ""
a=$(req "$base/hello/notes/")
expect "$a" 404 ""

a=$(req -X PUT -H "$auth" "http://127.0.0.1:$admin/plugins/hotspot/admin/settings" -d '{"api_enabled":true,"get_enabled":true}')
expect "$a" 200 '"api_enabled":true'
a=$(req -X POST -H "$auth" "http://127.0.0.1:$admin/plugins/hotspot/admin/api-key")
expect "$a" 201 '"key"'
key=$(body "$a" | grep -o '"key":"[^"]*"' | cut -d'"' -f4)
a=$(req "$base/api/" -H 'content-type: application/json' -d '{"api-key":"'"$key"'","action":"create_voucher","username":"guest1","passcode":"pass123","fullname":"Router Guest","valid_for":"1 day"}')
expect "$a" 200 '"User added successfully"'

# The endless loop ends at its 1 s deadline; the host answers meanwhile.
started=$(date +%s%N)
a=$(req "$base/fixture/loop")
took=$((($(date +%s%N) - started) / 1000000))
[ "$(status "$a")" = 504 ] || [ "$(status "$a")" = 500 ] || [ "$(status "$a")" = 503 ] || fail "loop: $(status "$a") $(body "$a")"
[ "$took" -lt 10000 ] || fail "the loop took $took ms"
a=$(req "$base/hello/")
expect "$a" 200 "hello from"

stop
start
a=$(req "$base/hello/notes/$kept")
expect "$a" 200 '"body":"across restarts"'
a=$(req -H "X-API-Key: $key" "$base/api/?action=get_voucher_users")
expect "$a" 200 '"guest1"'
stop

# An artefact for another architecture is refused, naming both.
other=pulley64
case "$target" in x86_64-*) other=aarch64-unknown-linux-musl ;; esac
write_config "$wasm/hello.wasm" "$wasm/hotspot.wasm" "$wasm/fixture.wasm"
"$full" compile --config "$dir/config.yaml" --target "$other" --key "$dir/compile.key" --out "$dir/other" --plugin hello >/dev/null
write_config "$dir/other/hello.aot" "$dir/aot/hotspot.aot" "$dir/aot/fixture.aot"
if "${run[@]}" "$bin" check --config "$dir/config.yaml" >"$dir/check.log" 2>&1; then
	fail "check accepted an artefact of another architecture"
fi
grep -q "compiled for" "$dir/check.log" || { cat "$dir/check.log" >&2; fail "no clear message for the wrong architecture"; }

echo "smoke ($target): ok: notes, voucher, loop stopped in $took ms, restart kept the data, wrong-arch artefact refused"
