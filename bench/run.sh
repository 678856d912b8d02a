#!/usr/bin/env bash
# `make bench`: a standalone hyper server and the host's native handler vs. the
# hello plugin (fresh and warm instances) under wrk, plus the Python and
# JavaScript hello plugins, plus the
# instantiate + call + drop microbenchmark, plus the hotspot plugin's
# create_voucher (durable commits) and get_voucher_users (10,000 vouchers),
# plus the wgdashboard plugin's /api/handshake and getWireguardConfigurations
# (10 configurations of 50 peers), plus the vpnpanel plugin's bulk creation
# of 10,000 users and list_all over 110 sub-admins of 1,000 users each
# (120,000 users with the bulk's; peak server RSS while it runs, first byte);
# writes BENCHMARKS.md at the repo root.
#
# Builds nothing (the Makefile does). Loopback only; bounded in time (about
# two minutes: 7 wrk runs of WARMUP + DURATION seconds, two server starts, the
# seeding of the vouchers and a bench-instantiate run, each under a timeout).
# Needs wrk (installed with apt-get when missing) and curl.
#
# Environment knobs (defaults in brackets):
#   WASMGATE_BIN [target/release/wasmgate]  BENCH_OUT [BENCHMARKS.md]
#   BENCH_DURATION [5] seconds per measured run  BENCH_WARMUP [1] seconds
#   BENCH_CONNECTIONS ["32 256"]  BENCH_ITERATIONS [20000]
#   BENCH_HOTSPOT_VOUCHERS [10000] vouchers listed by get_voucher_users
#   BENCH_HOTSPOT_LIST_CONNECTIONS [4]  BENCH_HOTSPOT_CREATE_CONNECTIONS ["1 4 32"]
#   BENCH_WGD_CONFIGURATIONS [10]  BENCH_WGD_PEERS [50] peers per configuration
#   BENCH_WGD_CONNECTIONS [32]
#   BENCH_VPN_BULK [10000] users in the timed bulk creation
#   BENCH_VPN_BULK_ROUNDS [3] fresh servers the bulk is timed on (median)
#   BENCH_VPN_SUB_ADMINS [110]  BENCH_VPN_USERS_PER_SUB [1000]
#   BENCH_VPN_CONNECTIONS [4] for list_all
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${WASMGATE_BIN:-target/release/wasmgate}
NATIVE_BIN=${NATIVE_HELLO_BIN:-$(dirname "$BIN")/native-hello}
CONFIG=bench/hello.yaml
WASM=target/wasm32-wasip2/release/hello.wasm
OUT=${BENCH_OUT:-BENCHMARKS.md}
DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
THREADS=2
read -r -a CONNECTIONS <<<"${BENCH_CONNECTIONS:-32 256}"
ITERATIONS=${BENCH_ITERATIONS:-20000}
READY_TIMEOUT=40 # seconds for the server to print `ready` (first start compiles)
LUA=bench/wrk-report.lua
SCRIPTS_CONFIG=bench/scripts.yaml
HOTSPOT_CONFIG=bench/hotspot.yaml
HOTSPOT_WASM=target/wasm32-wasip2/release/hotspot.wasm
HOTSPOT_LUA=bench/wrk-hotspot-create.lua
HOTSPOT_VOUCHERS=${BENCH_HOTSPOT_VOUCHERS:-10000}
read -r -a HOTSPOT_LIST_CONNECTIONS <<<"${BENCH_HOTSPOT_LIST_CONNECTIONS:-4}"
read -r -a HOTSPOT_CREATE_CONNECTIONS <<<"${BENCH_HOTSPOT_CREATE_CONNECTIONS:-1 4 32}"
WGD_CONFIG=bench/wgdashboard.yaml
WGD_WASM=target/wasm32-wasip2/release/wgdashboard.wasm
WGD_CONFIGURATIONS=${BENCH_WGD_CONFIGURATIONS:-10}
WGD_PEERS=${BENCH_WGD_PEERS:-50}
read -r -a WGD_CONNECTIONS <<<"${BENCH_WGD_CONNECTIONS:-32}"
VPN_CONFIG=bench/vpnpanel.yaml
VPN_SMALL_CACHE_CONFIG=bench/vpnpanel-small-cache.yaml
VPN_BULK=${BENCH_VPN_BULK:-10000}
VPN_SUB_ADMINS=${BENCH_VPN_SUB_ADMINS:-110}
VPN_USERS_PER_SUB=${BENCH_VPN_USERS_PER_SUB:-1000}
read -r -a VPN_CONNECTIONS <<<"${BENCH_VPN_CONNECTIONS:-4}"
VPN_BULK_ROUNDS=${BENCH_VPN_BULK_ROUNDS:-3}
# Marker: anything from this line on in an existing $OUT is hand-written and kept.
NOTES_MARKER='<!-- hand-written notes below this line are kept by bench/run.sh -->'

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[ -x "$BIN" ] || die "$BIN not found: run \`make build\` (or \`make bench\`) first"
[ -x "$NATIVE_BIN" ] || die "$NATIVE_BIN not found: run \`make bench\` (it builds it)"
[ -f "$WASM" ] || die "$WASM not found: run \`make build\` first"
[ -f "$HOTSPOT_WASM" ] || die "$HOTSPOT_WASM not found: run \`make build\` first"
[ -f "$WGD_WASM" ] || die "$WGD_WASM not found: run \`make build\` first"
for tool in awk grep sed timeout curl; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

if ! command -v wrk >/dev/null 2>&1; then
	log "installing wrk"
	SUDO=""
	if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
	export DEBIAN_FRONTEND=noninteractive
	{ $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk; } >/dev/null ||
		die "could not install wrk with apt-get"
fi

loadavg=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-bench.XXXXXX")
server_pid=""
server_status=""

# stop_server: SIGTERM, then up to 10 s for a graceful exit, then SIGKILL.
stop_server() {
	[ -n "$server_pid" ] || return 0
	local pid=$server_pid
	server_pid=""
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		local i
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "server did not exit 10 s after SIGTERM: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	server_status=0
	wait "$pid" 2>/dev/null || server_status=$?
}
standalone_pid=""
cleanup() {
	stop_server
	[ -z "$standalone_pid" ] || kill "$standalone_pid" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------
# start_server NAME CONFIG [ARGS...]: serve CONFIG with data in $tmp/NAME-data,
# output in $tmp/NAME.out and $tmp/NAME.err, and wait for `ready`. The first
# start compiles every component into the data dir's cache; the server is then
# restarted, so that what is measured (memory above all: the compiler's code
# and heap are not in a warm start) is the state of every later start.
start_server() {
	spawn_server "$@"
	stop_server
	spawn_server "$@"
}

spawn_server() {
	local name=$1 config=$2
	shift 2
	log "starting $BIN serve (config $config)"
	# Removed first: the redirection below truncates the file only once the
	# child runs, and the wait must not see the previous start's `ready`.
	rm -f "$tmp/$name.out" "$tmp/$name.err"
	RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$config" --data-dir "$tmp/$name-data" \
		"$@" </dev/null >"$tmp/$name.out" 2>"$tmp/$name.err" &
	server_pid=$!
	local deadline=$((SECONDS + READY_TIMEOUT))
	until grep -qx 'ready' "$tmp/$name.out" 2>/dev/null; do
		if ! kill -0 "$server_pid" 2>/dev/null; then
			server_pid=""
			log "server exited before \`ready\`; its stderr:"
			tail -n 20 "$tmp/$name.err" >&2 || true
			die "server failed to start"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 20 "$tmp/$name.err" >&2 || true
			die "server printed no \`ready\` within ${READY_TIMEOUT}s"
		fi
		sleep 0.1
	done
}

start_server server "$CONFIG" --bench-native 127.0.0.1:0

# The limit: a bare hyper server answering the same bytes, in its own process.
"$NATIVE_BIN" 127.0.0.1:0 </dev/null >"$tmp/standalone.out" 2>"$tmp/standalone.err" &
standalone_pid=$!
for ((i = 0; i < 100; i++)); do
	grep -q '^listening ' "$tmp/standalone.out" 2>/dev/null && break
	sleep 0.1
done
standalone_addr=$(awk '$1 == "listening" { print $2; exit }' "$tmp/standalone.out")
[ -n "$standalone_addr" ] || die "$NATIVE_BIN printed no \`listening\` line"

# `listening native <addr>`, `listening plugins <addr> <configured>`.
native_addr=$(awk '$1 == "listening" && $2 == "native" { print $3; exit }' "$tmp/server.out")
plugin_addr=$(awk '$1 == "listening" && $2 == "plugins" { print $3; exit }' "$tmp/server.out")
[ -n "$native_addr" ] || die "no \`listening native\` line (does serve support --bench-native?)"
[ -n "$plugin_addr" ] || die "no \`listening plugins\` line"
for addr in "$standalone_addr" "$native_addr" "$plugin_addr"; do
	case $addr in
	127.* | '[::1]':*) ;;
	*) die "refusing to load a non-loopback address: $addr" ;;
	esac
done
standalone_url="http://$standalone_addr/"
native_url="http://$native_addr/"
plugin_url="http://$plugin_addr/hello/"
warm_url="http://$plugin_addr/warm/"
log "native $native_url, plugin $plugin_url"

# Both must answer 200 with the same body, or the comparison means nothing.
if command -v curl >/dev/null 2>&1; then
	standalone_body=$(curl -fsS --max-time 10 "$standalone_url") || die "GET $standalone_url failed"
	native_body=$(curl -fsS --max-time 10 "$native_url") || die "GET $native_url failed"
	plugin_body=$(curl -fsS --max-time 10 "$plugin_url") || die "GET $plugin_url failed"
	[ "$native_body" = "$plugin_body" ] && [ "$standalone_body" = "$plugin_body" ] ||
		log "warning: bodies differ: standalone '$standalone_body', native '$native_body', plugin '$plugin_body'"
fi

# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------
# field FILE NAME: a value from the WRK_RESULT line that bench/wrk-report.lua prints.
field() {
	awk -v k="$2" '$1 == "WRK_RESULT" { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } } }' "$1"
}

declare -A rps p50 p99 errs
# measure TARGET URL CONNECTIONS: a warm-up, then a measured run whose
# figures go to rps, p50, p99 and errs under TARGET/CONNECTIONS.
measure() {
	local target=$1 url=$2 c=$3
	local out="$tmp/wrk-$target-$c.txt" key="$target/$c" requests
	log "wrk $target c=$c: ${WARMUP}s warm-up, ${DURATION}s measured"
	timeout $((WARMUP + 20)) wrk -t"$THREADS" -c"$c" -d"${WARMUP}s" "$url" >/dev/null ||
		die "wrk warm-up against $url failed"
	timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$c" -d"${DURATION}s" --timeout 10s --latency \
		-s "$LUA" "$url" >"$out" 2>&1 || {
		cat "$out" >&2
		die "wrk against $url failed"
	}
	grep -q '^WRK_RESULT ' "$out" || die "no WRK_RESULT line in wrk's output ($out)"
	rps[$key]=$(field "$out" rps)
	p50[$key]=$(field "$out" p50_us)
	p99[$key]=$(field "$out" p99_us)
	requests=$(field "$out" requests)
	errs[$key]=$(($(field "$out" non2xx) + $(field "$out" connect) + $(field "$out" read) + $(field "$out" write) + $(field "$out" timeout)))
	if [ "${errs[$key]}" -gt 0 ]; then
		log "warning: $target c=$c: ${errs[$key]} errors or non-2xx answers out of $requests requests"
	fi
	if [ "${requests:-0}" -eq 0 ]; then die "$target c=$c: no request completed"; fi
}
for c in "${CONNECTIONS[@]}"; do
	measure standalone "$standalone_url" "$c"
	measure native "$native_url" "$c"
	measure plugin "$plugin_url" "$c"
	measure warm "$warm_url" "$c"
done

# Server memory after the load.
rss_kb=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$server_pid/status" 2>/dev/null || true)
hwm_kb=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$server_pid/status" 2>/dev/null || true)

stop_server
if [ "$server_status" != 0 ]; then
	log "warning: server exited with status $server_status after SIGTERM (expected 0)"
fi
kill "$standalone_pid" 2>/dev/null || true
wait "$standalone_pid" 2>/dev/null || true

# ---------------------------------------------------------------------------
# The Python and JavaScript hello plugins, when `make build` made them
# ---------------------------------------------------------------------------
script_langs=()
if [ -f target/hello-py.wasm ] && [ -f target/hello-js.wasm ]; then
	# Their first start compiles two large components.
	saved_timeout=$READY_TIMEOUT
	READY_TIMEOUT=300
	start_server scripts "$SCRIPTS_CONFIG"
	READY_TIMEOUT=$saved_timeout
	scripts_addr=$(awk '$1 == "listening" && $2 == "plugins" { print $3; exit }' "$tmp/scripts.out")
	case $scripts_addr in 127.*) ;; *) die "refusing to load a non-loopback address: $scripts_addr" ;; esac
	for lang in py js py-warm js-warm; do
		body=$(curl -fsS --max-time 10 "http://$scripts_addr/$lang/") || die "GET /$lang/ failed"
		[ "$body" = "$plugin_body" ] || log "warning: $lang answers '$body', not '$plugin_body'"
	done
	script_langs=(py js)
	for c in "${CONNECTIONS[@]}"; do
		for target in py js py-warm js-warm; do
			measure "$target" "http://$scripts_addr/$target/" "$c"
		done
	done
	stop_server
else
	log "target/hello-py.wasm or target/hello-js.wasm missing (make build makes them): no Python and JavaScript rows"
fi

# ---------------------------------------------------------------------------
# instantiate + call + drop
# ---------------------------------------------------------------------------
inst_args=(bench-instantiate --config "$CONFIG" --plugin hello --iterations "$ITERATIONS" --path /hello/)
if "$BIN" bench-instantiate --help 2>/dev/null | grep -q -- '--data-dir'; then
	inst_args+=(--data-dir "$tmp/inst-data")
fi
log "$BIN ${inst_args[*]}"
RUST_LOG=${RUST_LOG:-warn} timeout 60 "$BIN" "${inst_args[@]}" </dev/null >"$tmp/inst.out" 2>"$tmp/inst.err" || {
	tail -n 20 "$tmp/inst.err" >&2 || true
	die "bench-instantiate failed"
}
inst_json=$(grep -E '^[[:space:]]*\{' "$tmp/inst.out" | tail -n 1 || true)
[ -n "$inst_json" ] || die "bench-instantiate printed no JSON line: $(head -c 300 "$tmp/inst.out")"
jnum() { printf '%s\n' "$inst_json" | sed -nE 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*([-0-9.eE+]+).*/\1/p'; }
jstr() { printf '%s\n' "$inst_json" | sed -nE 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"([^"]*)".*/\1/p'; }
us() { [ -n "$1" ] && awk -v x="$1" 'BEGIN { printf "%.2f", x }' || echo "?"; }
inst_iter=$(jnum iterations)
inst_us=$(us "$(jnum instantiate_us)")
call_us=$(us "$(jnum call_us)")
total_us=$(us "$(jnum total_us)")
allocator=$(jstr allocator)

# ---------------------------------------------------------------------------
# hotspot: get_voucher_users over HOTSPOT_VOUCHERS vouchers, then create_voucher
# ---------------------------------------------------------------------------
# The list runs first so that it sees exactly HOTSPOT_VOUCHERS vouchers; the
# create runs add theirs afterwards.
start_server hotspot "$HOTSPOT_CONFIG"
hs_addr=$(awk '$1 == "listening" && $2 == "plugins" { print $3; exit }' "$tmp/hotspot.out")
hs_admin=$(awk '$1 == "listening" && $2 == "admin" { print $3; exit }' "$tmp/hotspot.out")
for addr in "$hs_addr" "$hs_admin"; do
	case $addr in
	127.* | '[::1]':*) ;;
	*) die "refusing to load a non-loopback address: ${addr:-none}" ;;
	esac
done
hs_auth="Authorization: Bearer $(cat "$tmp/hotspot-data/admin.token")"
hs_admin_url="http://$hs_admin/plugins/hotspot/admin"
curl -fsS --max-time 10 -H "$hs_auth" -X PUT -d '{"api_enabled":true,"get_enabled":true,"post_enabled":true}' \
	"$hs_admin_url/settings" >/dev/null || die "cannot enable the hotspot API"
hs_key=$(curl -fsS --max-time 10 -H "$hs_auth" -X POST "$hs_admin_url/api-key" | sed -nE 's/.*"key":"([^"]+)".*/\1/p')
[ -n "$hs_key" ] || die "no hotspot API key"
hs_vouchers() { curl -fsS --max-time 10 -H "$hs_auth" "$hs_admin_url/stats" | sed -nE 's/.*"vouchers":([0-9]+).*/\1/p'; }

log "hotspot: seeding $HOTSPOT_VOUCHERS vouchers through the admin batch route"
left=$HOTSPOT_VOUCHERS
while ((left > 0)); do
	n=$((left > 1000 ? 1000 : left))
	curl -fsS --max-time 120 -H "$hs_auth" -X POST -d "{\"count\":$n}" "$hs_admin_url/vouchers" >/dev/null ||
		die "seeding hotspot vouchers failed"
	left=$((left - n))
done
hs_seeded=$(hs_vouchers)
[ "$hs_seeded" = "$HOTSPOT_VOUCHERS" ] || die "expected $HOTSPOT_VOUCHERS vouchers, found ${hs_seeded:-none}"
list_url="http://$hs_addr/api/?action=get_voucher_users"
create_url="http://$hs_addr/api/"
list_bytes=$(curl -fsS --max-time 30 -H "X-API-Key: $hs_key" "$list_url" | wc -c)
curl -fsS --max-time 10 -H "X-API-Key: $hs_key" -H 'content-type: application/json' \
	-d '{"action":"create_voucher"}' "$create_url" | grep -q '"error":false' || die "create_voucher does not answer error:false"

declare -A hs_rps hs_p50 hs_p99 hs_errs hs_requests hs_stored
# hs_wrk NAME URL CONNECTIONS [wrk args...]: a warm-up, then a measured run
# into $tmp/wrk-hotspot-NAME-CONNECTIONS.txt; the key goes in X-API-Key.
hs_wrk() {
	local name=$1 url=$2 c=$3
	shift 3
	local out="$tmp/wrk-hotspot-$name-$c.txt" key="$name/$c"
	log "wrk hotspot $name c=$c: ${WARMUP}s warm-up, ${DURATION}s measured"
	timeout $((WARMUP + 30)) wrk -t"$((c < THREADS ? c : THREADS))" -c"$c" -d"${WARMUP}s" --timeout 10s -H "X-API-Key: $hs_key" "$@" "$url" >/dev/null ||
		die "wrk warm-up against $url failed"
	local before after
	before=$(hs_vouchers)
	timeout $((DURATION + 30)) wrk -t"$((c < THREADS ? c : THREADS))" -c"$c" -d"${DURATION}s" --timeout 10s --latency \
		-H "X-API-Key: $hs_key" "$@" "$url" >"$out" 2>&1 || {
		cat "$out" >&2
		die "wrk against $url failed"
	}
	after=$(hs_vouchers)
	hs_stored[$key]=$((after - before))
	grep -q '^WRK_RESULT ' "$out" || die "no WRK_RESULT line in wrk's output ($out)"
	hs_rps[$key]=$(field "$out" rps)
	hs_p50[$key]=$(field "$out" p50_us)
	hs_p99[$key]=$(field "$out" p99_us)
	hs_requests[$key]=$(field "$out" requests)
	hs_errs[$key]=$(($(field "$out" non2xx) + $(field "$out" connect) + $(field "$out" read) + $(field "$out" write) + $(field "$out" timeout)))
	if [ "${hs_errs[$key]}" -gt 0 ]; then
		log "warning: hotspot $name c=$c: ${hs_errs[$key]} errors or non-2xx answers out of ${hs_requests[$key]} requests"
	fi
	if [ "${hs_requests[$key]:-0}" -eq 0 ]; then die "hotspot $name c=$c: no request completed"; fi
	# The API answers 200 even for "An error occurred": a create that stored
	# nothing is an error too. wrk may count a request or two more than
	# finished inside the window, so only a larger gap is reported.
	if [ "$name" = create ]; then
		local missing=$((hs_requests[$key] - hs_stored[$key]))
		if [ "$missing" -gt "$c" ]; then
			hs_errs[$key]=$((hs_errs[$key] + missing))
			log "warning: hotspot create c=$c: ${hs_requests[$key]} requests but ${hs_stored[$key]} vouchers stored"
		fi
	fi
}
for c in "${HOTSPOT_LIST_CONNECTIONS[@]}"; do
	hs_wrk list "$list_url" "$c" -s "$LUA"
done
for c in "${HOTSPOT_CREATE_CONNECTIONS[@]}"; do
	hs_wrk create "$create_url" "$c" -s "$HOTSPOT_LUA"
done
# Every create answered 200 (the API's envelope); count what was stored.
hs_total=$(hs_vouchers)
hs_rss_kb=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$server_pid/status" 2>/dev/null || true)
stop_server
if [ "$server_status" != 0 ]; then
	log "warning: hotspot server exited with status $server_status after SIGTERM (expected 0)"
fi

# ---------------------------------------------------------------------------
# wgdashboard: /api/handshake and /api/getWireguardConfigurations
# ---------------------------------------------------------------------------
# WGD_CONFIGURATIONS configurations of WGD_PEERS peers each, made through the
# API with an API key. None is toggled on: the listing reads kv and the
# device list, and no device exists.
start_server wgd "$WGD_CONFIG"
wgd_addr=$(awk '$1 == "listening" && $2 == "plugins" { print $3; exit }' "$tmp/wgd.out")
wgd_admin=$(awk '$1 == "listening" && $2 == "admin" { print $3; exit }' "$tmp/wgd.out")
for addr in "$wgd_addr" "$wgd_admin"; do
	case $addr in
	127.* | '[::1]':*) ;;
	*) die "refusing to load a non-loopback address: ${addr:-none}" ;;
	esac
done
wgd_api="http://$wgd_addr/api"
wgd_password=$(head -c 18 /dev/urandom | base64)
curl -fsS --max-time 10 -H "Authorization: Bearer $(cat "$tmp/wgd-data/admin.token")" -X PUT \
	-d "{\"username\":\"bench\",\"password\":\"$wgd_password\"}" \
	"http://$wgd_admin/plugins/wgdashboard/admin/account" >/dev/null || die "cannot set the wgdashboard account"
curl -fsS --max-time 60 -c "$tmp/wgd.cookies" -H 'content-type: application/json' \
	-d "{\"username\":\"bench\",\"password\":\"$wgd_password\",\"totp\":\"\"}" "$wgd_api/authenticate" |
	grep -q '"status":true' || die "cannot log in to wgdashboard"
# The list has this one key; its `Key` is the secret in this answer only.
wgd_key=$(curl -fsS --max-time 10 -b "$tmp/wgd.cookies" -H 'content-type: application/json' \
	-d '{"NeverExpire":true}' "$wgd_api/newDashboardAPIKey" | sed -nE 's/.*"Key":"([^"]+)".*/\1/p')
[ -n "$wgd_key" ] || die "no wgdashboard API key"
wgd_post() {
	curl -fsS --max-time 60 -H "wg-dashboard-apikey: $wgd_key" -H 'content-type: application/json' -d "$2" "$wgd_api/$1"
}
log "wgdashboard: $WGD_CONFIGURATIONS configurations of $WGD_PEERS peers through the API"
for ((i = 0; i < WGD_CONFIGURATIONS; i++)); do
	# Any 32 random bytes are an X25519 private key.
	private_key=$(head -c 32 /dev/urandom | base64)
	wgd_post addWireguardConfiguration "{\"ConfigurationName\":\"wgbench$i\",\"Address\":\"10.200.$i.1/24\",\"ListenPort\":$((52000 + i)),\"PrivateKey\":\"$private_key\"}" |
		grep -q '"status":true' || die "addWireguardConfiguration wgbench$i failed"
	wgd_post "addPeers/wgbench$i" "{\"bulkAdd\":true,\"bulkAddAmount\":$WGD_PEERS}" |
		grep -q '"status":true' || die "addPeers/wgbench$i failed"
done
wgd_list=$(curl -fsS --max-time 30 -H "wg-dashboard-apikey: $wgd_key" "$wgd_api/getWireguardConfigurations")
wgd_listed=$(printf '%s' "$wgd_list" | grep -o '"Name":' | wc -l)
[ "$wgd_listed" -eq "$WGD_CONFIGURATIONS" ] || die "expected $WGD_CONFIGURATIONS configurations, listed $wgd_listed"
wgd_list_bytes=${#wgd_list}

declare -A wgd_rps wgd_p50 wgd_p99 wgd_errs wgd_requests
# wgd_wrk NAME URL CONNECTIONS: a warm-up, then a measured run into
# $tmp/wrk-wgd-NAME-CONNECTIONS.txt; the key goes in wg-dashboard-apikey.
wgd_wrk() {
	local name=$1 url=$2 c=$3
	local out="$tmp/wrk-wgd-$name-$c.txt" key="$name/$c"
	log "wrk wgdashboard $name c=$c: ${WARMUP}s warm-up, ${DURATION}s measured"
	timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$c" -d"${WARMUP}s" --timeout 10s -H "wg-dashboard-apikey: $wgd_key" "$url" >/dev/null ||
		die "wrk warm-up against $url failed"
	timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$c" -d"${DURATION}s" --timeout 10s --latency \
		-H "wg-dashboard-apikey: $wgd_key" -s "$LUA" "$url" >"$out" 2>&1 || {
		cat "$out" >&2
		die "wrk against $url failed"
	}
	grep -q '^WRK_RESULT ' "$out" || die "no WRK_RESULT line in wrk's output ($out)"
	wgd_rps[$key]=$(field "$out" rps)
	wgd_p50[$key]=$(field "$out" p50_us)
	wgd_p99[$key]=$(field "$out" p99_us)
	wgd_requests[$key]=$(field "$out" requests)
	wgd_errs[$key]=$(($(field "$out" non2xx) + $(field "$out" connect) + $(field "$out" read) + $(field "$out" write) + $(field "$out" timeout)))
	if [ "${wgd_errs[$key]}" -gt 0 ]; then
		log "warning: wgdashboard $name c=$c: ${wgd_errs[$key]} errors or non-2xx answers out of ${wgd_requests[$key]} requests"
	fi
	if [ "${wgd_requests[$key]:-0}" -eq 0 ]; then die "wgdashboard $name c=$c: no request completed"; fi
}
for c in "${WGD_CONNECTIONS[@]}"; do
	wgd_wrk handshake "$wgd_api/handshake" "$c"
	wgd_wrk configurations "$wgd_api/getWireguardConfigurations" "$c"
done
wgd_rss_kb=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$server_pid/status" 2>/dev/null || true)
stop_server
if [ "$server_status" != 0 ]; then
	log "warning: wgdashboard server exited with status $server_status after SIGTERM (expected 0)"
fi

# ---------------------------------------------------------------------------
# vpnpanel: one bulk creation of VPN_BULK users, then list_all with
# VPN_SUB_ADMINS sub-admins of VPN_USERS_PER_SUB users each
# ---------------------------------------------------------------------------
# vpn_connect NAME: vpn_api and a fresh main-admin key (vpn_main) for the
# server started as NAME.
vpn_connect() {
	local name=$1 addr admin
	addr=$(awk '$1 == "listening" && $2 == "plugins" { print $3; exit }' "$tmp/$name.out")
	admin=$(awk '$1 == "listening" && $2 == "admin" { print $3; exit }' "$tmp/$name.out")
	for a in "$addr" "$admin"; do
		case $a in
		127.* | '[::1]':*) ;;
		*) die "refusing to load a non-loopback address: ${a:-none}" ;;
		esac
	done
	vpn_api="http://$addr/api/v1"
	vpn_main=$(curl -fsS --max-time 10 -H "Authorization: Bearer $(cat "$tmp/$name-data/admin.token")" -X POST \
		-d '{"label":"bench"}' "http://$admin/plugins/vpnpanel/admin/keys" | sed -nE 's/.*"api_key":"([^"]+)".*/\1/p')
	[ -n "$vpn_main" ] || die "no vpnpanel main-admin key"
}
# vpn_bulk OUT [EXTRA_FIELDS]: one bulk creation of VPN_BULK users with the
# main admin's key, its answer in OUT; prints curl's total time in seconds.
vpn_bulk() {
	local out=$1 extra=${2:-} made secs
	secs=$(curl -fsS --max-time 120 -o "$out" -w '%{time_total}' -H "X-API-KEY: $vpn_main" \
		-H 'content-type: application/json' -d "{\"bulk_count\":$VPN_BULK,\"data_limit\":10$extra}" "$vpn_api/users") ||
		die "vpnpanel bulk creation failed"
	made=$(grep -o '"user[0-9]*"' "$out" | wc -l)
	[ "$made" -eq "$VPN_BULK" ] || die "vpnpanel bulk created $made users, expected $VPN_BULK"
	echo "$secs"
}
# vpn_post KEY PATH BODY
vpn_post() {
	curl -fsS --max-time 120 -H "X-API-KEY: $1" -H 'content-type: application/json' -d "$3" "$vpn_api$2"
}
# The timed bulk: one ~0.2 s request is at the mercy of whatever else the
# machine does, so it is timed VPN_BULK_ROUNDS times, each on a fresh server
# with an empty store, and the median is reported with the range.
vpn_bulk_times=()
for ((r = 1; r <= VPN_BULK_ROUNDS; r++)); do
	start_server "vpnbulk$r" "$VPN_CONFIG"
	vpn_connect "vpnbulk$r"
	log "vpnpanel: bulk creation of $VPN_BULK users (round $r of $VPN_BULK_ROUNDS)"
	secs=$(vpn_bulk "$tmp/vpn-bulk-$r.json")
	vpn_bulk_times+=("$secs")
	stop_server
done
read -r vpn_bulk_s vpn_bulk_min vpn_bulk_max < <(printf '%s\n' "${vpn_bulk_times[@]}" | sort -g |
	awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }')

start_server vpn "$VPN_CONFIG"
vpn_connect vpn
# Not timed: the main admin's own users in list_all below.
vpn_bulk "$tmp/vpn-bulk.json" >/dev/null
# The bulk's users stay: they are the main admin's own, in its list_all.
log "vpnpanel: $VPN_SUB_ADMINS sub-admins of $VPN_USERS_PER_SUB users"
vpn_sub_key=""
for ((i = 0; i < VPN_SUB_ADMINS; i++)); do
	key=$(vpn_post "$vpn_main" /sub_admins "{\"username\":\"bench$i\",\"password\":\"pass\"}" |
		sed -nE 's/.*"api_key":"([^"]+)".*/\1/p')
	[ -n "$key" ] || die "cannot create sub-admin bench$i"
	vpn_post "$key" /users "{\"bulk_count\":$VPN_USERS_PER_SUB}" | grep -q '"success":true' ||
		die "bulk creation for sub-admin bench$i failed"
	vpn_sub_key=${vpn_sub_key:-$key}
done
vpn_main_bytes=$(curl -fsS --max-time 60 -H "X-API-KEY: $vpn_main" "$vpn_api/users/list_all" | wc -c)
vpn_sub_bytes=$(curl -fsS --max-time 60 -H "X-API-KEY: $vpn_sub_key" "$vpn_api/users/list_all" | wc -c)

# peak_rss_start PID / peak_rss_stop: the highest VmRSS of PID, sampled
# every 20 ms in between, in kB (printed by peak_rss_stop).
peak_rss_start() {
	local pid=$1
	: >"$tmp/rss-sampling"
	(
		peak=0
		while [ -e "$tmp/rss-sampling" ]; do
			r=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
			[ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$tmp/rss-peak"
			sleep 0.02
		done
	) &
	rss_sampler=$!
}
peak_rss_stop() {
	rm -f "$tmp/rss-sampling"
	wait "$rss_sampler" 2>/dev/null || true
	cat "$tmp/rss-peak" 2>/dev/null || echo ""
	rm -f "$tmp/rss-peak"
}

declare -A vpn_rps vpn_p50 vpn_p99 vpn_errs vpn_requests vpn_peak
# vpn_wrk NAME KEY CONNECTIONS: list_all with KEY in X-API-KEY.
vpn_wrk() {
	local name=$1 apikey=$2 c=$3
	local out="$tmp/wrk-vpn-$name-$c.txt" key="$name/$c" url="$vpn_api/users/list_all"
	log "wrk vpnpanel list_all ($name) c=$c: ${WARMUP}s warm-up, ${DURATION}s measured"
	timeout $((WARMUP + 60)) wrk -t"$THREADS" -c"$c" -d"${WARMUP}s" --timeout 30s -H "X-API-KEY: $apikey" "$url" >/dev/null ||
		die "wrk warm-up against $url failed"
	peak_rss_start "$server_pid"
	timeout $((DURATION + 60)) wrk -t"$THREADS" -c"$c" -d"${DURATION}s" --timeout 30s --latency \
		-H "X-API-KEY: $apikey" -s "$LUA" "$url" >"$out" 2>&1 || {
		cat "$out" >&2
		die "wrk against $url failed"
	}
	vpn_peak[$key]=$(peak_rss_stop)
	grep -q '^WRK_RESULT ' "$out" || die "no WRK_RESULT line in wrk's output ($out)"
	vpn_rps[$key]=$(field "$out" rps)
	vpn_p50[$key]=$(field "$out" p50_us)
	vpn_p99[$key]=$(field "$out" p99_us)
	vpn_requests[$key]=$(field "$out" requests)
	vpn_errs[$key]=$(($(field "$out" non2xx) + $(field "$out" connect) + $(field "$out" read) + $(field "$out" write) + $(field "$out" timeout)))
	if [ "${vpn_errs[$key]}" -gt 0 ]; then
		log "warning: vpnpanel list_all ($name) c=$c: ${vpn_errs[$key]} errors or non-2xx answers out of ${vpn_requests[$key]} requests"
	fi
	if [ "${vpn_requests[$key]:-0}" -eq 0 ]; then die "vpnpanel list_all ($name) c=$c: no request completed"; fi
}
for c in "${VPN_CONNECTIONS[@]}"; do
	vpn_wrk sub "$vpn_sub_key" "$c"
done
# The main admin's list_all on a server restarted on the same data, so
# that its memory is what serving it costs, not what seeding left behind:
# with the default page cache, then with an 8 MiB one.
stop_server
start_server vpn "$VPN_CONFIG"
vpn_connect vpn
vpn_rss_base=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$server_pid/status" 2>/dev/null || true)
# The first byte and the whole of the main admin's list_all, one request
# at a time: the median of five (seconds).
vpn_ttfb_all=()
vpn_total_all=()
for _ in 1 2 3 4 5; do
	read -r t1 t2 < <(curl -fsS --max-time 60 -o /dev/null -w '%{time_starttransfer} %{time_total}\n' -H "X-API-KEY: $vpn_main" "$vpn_api/users/list_all") ||
		die "vpnpanel list_all (main) failed"
	vpn_ttfb_all+=("$t1")
	vpn_total_all+=("$t2")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
vpn_ttfb=$(median "${vpn_ttfb_all[@]}")
vpn_total=$(median "${vpn_total_all[@]}")

for c in "${VPN_CONNECTIONS[@]}"; do
	vpn_wrk main "$vpn_main" "$c"
done
stop_server
start_server vpn "$VPN_SMALL_CACHE_CONFIG"
vpn_connect vpn
for c in "${VPN_CONNECTIONS[@]}"; do
	vpn_wrk main-small-cache "$vpn_main" "$c"
done
stop_server
start_server vpn "$VPN_CONFIG"
vpn_connect vpn
# After list_all, so that its figures stay comparable: the same bulk with
# enable_wg1, each user also getting an X25519 key pair and an address.
log "vpnpanel: bulk creation of $VPN_BULK users with enable_wg1"
vpn_bulk_wg_s=$(vpn_bulk "$tmp/vpn-bulk-wg.json" ',"enable_wg1":true')
vpn_rss_kb=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$server_pid/status" 2>/dev/null || true)
stop_server
if [ "$server_status" != 0 ]; then
	log "warning: vpnpanel server exited with status $server_status after SIGTERM (expected 0)"
fi

# ---------------------------------------------------------------------------
# BENCHMARKS.md
# ---------------------------------------------------------------------------
ms() { awk -v u="$1" 'BEGIN { printf "%.2f ms", u / 1000 }'; }
num() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a / b < 0.1) printf "%.3fx", a / b; else if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
per_core() { awk -v t="$1" 'BEGIN { if (t + 0 > 0) printf "%.0f", 1e6 / t; else print "n/a" }'; }
kb_mib() { awk -v k="$1" 'BEGIN { if (k != "") printf "%.1f MiB", k / 1024; else print "n/a" }'; }

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
if [ -n "$(git status --porcelain 2>/dev/null | head -n 1)" ]; then rev="$rev (with local changes)"; fi
notes=""
if [ -f "$OUT" ] && grep -qxF "$NOTES_MARKER" "$OUT"; then
	notes=$(sed -n "\\|^${NOTES_MARKER}\$|,\$p" "$OUT" | tail -n +2)
fi

{
	echo "# Benchmarks"
	echo
	echo "Written by \`make bench\` (bench/run.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores${cpu:+ ($cpu)}, Linux $(uname -r), wasmgate $rev${loadavg:+; load average before the run: $loadavg}."
	echo
	echo "What was measured, on loopback, with the load generator and the server sharing the same cores:"
	echo
	echo "- **standalone**: the limit, [bench/native_hello.rs](bench/native_hello.rs): the smallest hyper server on tokio answering every request with 200 \`{\"message\":\"hello\"}\`, in its own process; no router, limits, metrics or logs. Ratios are against it."
	echo "- **native**: the host's hidden \`--bench-native\` listener, a Rust handler in the host's own hyper stack (connection caps, routing, metrics, request ids) giving the same answer."
	echo "- **plugin**: \`GET /hello/\` on the hello plugin ([$CONFIG]($CONFIG), greeting \"hello\"): the same answer, from a fresh wasm instance per request."
	echo "- **warm**: \`GET /warm/\` on the same component as the plugin \`hello-warm\` with \`limits.reuse\` (README, \"Warm instances\"): one request after another on a kept instance."
	echo "- wrk ${THREADS} threads, HTTP/1.1 keep-alive, a ${WARMUP} s warm-up then ${DURATION} s measured per row; latency percentiles are wrk's."
	echo
	echo "| connections | standalone req/s | native req/s | plugin req/s | warm req/s | plugin/standalone | warm/standalone | plugin/native | native/standalone | plugin p50 | plugin p99 | warm p99 | errors (s/n/p/w) |"
	echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for c in "${CONNECTIONS[@]}"; do
		s="standalone/$c" n="native/$c" p="plugin/$c" w="warm/$c"
		echo "| $c | $(num "${rps[$s]}") | $(num "${rps[$n]}") | $(num "${rps[$p]}") | $(num "${rps[$w]}") | $(ratio "${rps[$p]}" "${rps[$s]}") | $(ratio "${rps[$w]}" "${rps[$s]}") | $(ratio "${rps[$p]}" "${rps[$n]}") | $(ratio "${rps[$n]}" "${rps[$s]}") | $(ms "${p50[$p]}") | $(ms "${p99[$p]}") | $(ms "${p99[$w]}") | ${errs[$s]}/${errs[$n]}/${errs[$p]}/${errs[$w]} |"
	done
	if [ "${#script_langs[@]}" -gt 0 ]; then
		echo
		echo "The same answer from the Python and JavaScript hello plugins ([$SCRIPTS_CONFIG]($SCRIPTS_CONFIG): examples/hello-py built with componentize-py, examples/hello-js with componentize-js) on a server of their own, with a fresh instance per request and with warm instances (\`limits.reuse\`); ratios against the standalone server of the runs above:"
		echo
		echo "| connections | Python req/s | Python warm req/s | JavaScript req/s | JavaScript warm req/s | Python/standalone | Python warm/standalone | JavaScript/standalone | JavaScript warm/standalone | p99 (py/py warm/js/js warm) | errors |"
		echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
		for c in "${CONNECTIONS[@]}"; do
			echo "| $c | $(num "${rps[py/$c]}") | $(num "${rps[py-warm/$c]}") | $(num "${rps[js/$c]}") | $(num "${rps[js-warm/$c]}") | $(ratio "${rps[py/$c]}" "${rps[standalone/$c]}") | $(ratio "${rps[py-warm/$c]}" "${rps[standalone/$c]}") | $(ratio "${rps[js/$c]}" "${rps[standalone/$c]}") | $(ratio "${rps[js-warm/$c]}" "${rps[standalone/$c]}") | $(ms "${p99[py/$c]}") / $(ms "${p99[py-warm/$c]}") / $(ms "${p99[js/$c]}") / $(ms "${p99[js-warm/$c]}") | $((errs[py/$c] + errs[py-warm/$c] + errs[js/$c] + errs[js-warm/$c])) |"
		done
	fi
	echo
	echo "## Instantiate + call + drop"
	echo
	echo "\`wasmgate ${inst_args[*]:0:9}\`: the average per iteration of a fresh \`Store\` and instantiation, one handler call (\`GET /hello/\`), and the drop, on one thread with no HTTP${allocator:+ (instance allocator: $allocator)}."
	echo
	echo "| iterations | instantiate | call | total | total → calls/s on one core |"
	echo "| ---: | ---: | ---: | ---: | ---: |"
	echo "| ${inst_iter:-?} | $inst_us µs | $call_us µs | $total_us µs | $(per_core "$total_us") |"
	echo
	echo '```json'
	echo "$inst_json"
	echo '```'
	echo
	echo "## hotspot"
	echo
	echo "The hotspot plugin ([$HOTSPOT_CONFIG]($HOTSPOT_CONFIG)) on its own server, key in \`X-API-Key\`, same wrk settings:"
	echo
	echo "- **get_voucher_users**: \`GET /api/?action=get_voucher_users\` over $HOTSPOT_VOUCHERS vouchers (seeded through the admin batch route); every answer is the whole list, $list_bytes bytes of JSON, read with one kv prefix scan (pages of 1000) whose stored values are joined without parsing."
	echo "- **create_voucher**: \`POST /api/\` with a JSON body ([$HOTSPOT_LUA]($HOTSPOT_LUA)) and no username, so each request makes a new voucher with a random one: one kv transaction (a free random username checked in the index, the index entry and the record, the id from the host's sequence) committed by the group committer: concurrent creates share one redb fsync, and each is answered only once its batch is durable. No two creates read a key the other writes, so none conflicts. $((hs_total - HOTSPOT_VOUCHERS)) vouchers were created by these runs (warm-ups and one check request included)."
	echo
	echo "| request | connections | req/s | p50 | p99 | requests | vouchers stored | errors |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for c in "${HOTSPOT_LIST_CONNECTIONS[@]}"; do
		k="list/$c"
		echo "| get_voucher_users ($HOTSPOT_VOUCHERS vouchers) | $c | $(num "${hs_rps[$k]}") | $(ms "${hs_p50[$k]}") | $(ms "${hs_p99[$k]}") | ${hs_requests[$k]} | ${hs_stored[$k]} | ${hs_errs[$k]} |"
	done
	for c in "${HOTSPOT_CREATE_CONNECTIONS[@]}"; do
		k="create/$c"
		echo "| create_voucher (durable) | $c | $(num "${hs_rps[$k]}") | $(ms "${hs_p50[$k]}") | $(ms "${hs_p99[$k]}") | ${hs_requests[$k]} | ${hs_stored[$k]} | ${hs_errs[$k]} |"
	done
	echo
	echo "Hotspot server VmRSS after its runs: $(kb_mib "$hs_rss_kb")."
	echo
	echo "## wgdashboard"
	echo
	echo "The wgdashboard plugin ([$WGD_CONFIG]($WGD_CONFIG)) on its own server, the API key in \`wg-dashboard-apikey\` (checked by the host's \`keys\` on every request), same wrk settings. $WGD_CONFIGURATIONS configurations of $WGD_PEERS peers each, made through the API and not toggled on: every \`getWireguardConfigurations\` answer ($wgd_list_bytes bytes) reads the configurations and, for those that are off, their DataUsage sums cached under a revision counter (four small kv prefix scans; a configuration's peers are read again only after a change to them, and always for a configuration that is on, together with its live device). For scale, from issue 4: the original WGDashboard v4.2.5 under its own gunicorn configuration on this machine answered handshake at about 445 req/s and getWireguardConfigurations (one configuration of 50 peers) at about 388 req/s, p50 around 75 ms at 32 connections, with 103 MB of RSS."
	echo
	echo "| request | connections | req/s | p50 | p99 | requests | errors |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
	for c in "${WGD_CONNECTIONS[@]}"; do
		for name in handshake configurations; do
			k="$name/$c"
			label=$name
			[ "$name" = configurations ] && label="getWireguardConfigurations ($WGD_CONFIGURATIONS × $WGD_PEERS peers)"
			echo "| $label | $c | $(num "${wgd_rps[$k]}") | $(ms "${wgd_p50[$k]}") | $(ms "${wgd_p99[$k]}") | ${wgd_requests[$k]} | ${wgd_errs[$k]} |"
		done
	done
	echo
	echo "wgdashboard server VmRSS after its runs: $(kb_mib "$wgd_rss_kb")."
	echo
	echo "## vpnpanel"
	echo
	echo "The vpnpanel plugin ([$VPN_CONFIG]($VPN_CONFIG)) on its own server, a main-admin key from the admin surface in \`X-API-KEY\`. **Bulk creation**: one \`POST /api/v1/users {\"bulk_count\": $VPN_BULK}\` timed by curl on $VPN_BULK_ROUNDS fresh servers with empty stores (the median is shown: one request of a fifth of a second is at the mercy of the rest of the machine): one kv transaction (a name check, the record and the name index per user) committed durably before the answer. **list_all**: $VPN_SUB_ADMINS sub-admins of $VPN_USERS_PER_SUB users each (plus the $VPN_BULK of the bulk, the main admin's); with a sub-admin's key the answer is its $VPN_USERS_PER_SUB users ($vpn_sub_bytes bytes, one kv prefix scan), with the main admin's key every user grouped by sub-admin ($vpn_main_bytes bytes); same wrk settings."
	echo
	echo "| request | users | time | users/s |"
	echo "| --- | ---: | ---: | ---: |"
	echo "| bulk creation (one transaction; median of $VPN_BULK_ROUNDS fresh servers, range $(awk -v a="$vpn_bulk_min" -v b="$vpn_bulk_max" 'BEGIN { printf "%.0f–%.0f ms", a * 1000, b * 1000 }')) | $VPN_BULK | $(awk -v s="$vpn_bulk_s" 'BEGIN { printf "%.0f ms", s * 1000 }') | $(awk -v s="$vpn_bulk_s" -v n="$VPN_BULK" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }') |"
	echo "| bulk creation with enable_wg1 (plus a key pair and an address each; after list_all) | $VPN_BULK | $(awk -v s="$vpn_bulk_wg_s" 'BEGIN { printf "%.0f ms", s * 1000 }') | $(awk -v s="$vpn_bulk_wg_s" -v n="$VPN_BULK" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }') |"
	echo
	echo "| request | connections | req/s | p50 | p99 | requests | errors | peak server RSS |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for c in "${VPN_CONNECTIONS[@]}"; do
		for name in sub main main-small-cache; do
			k="$name/$c"
			label="list_all, sub-admin key ($VPN_USERS_PER_SUB users)"
			[ "$name" = main ] && label="list_all, main-admin key ($((VPN_SUB_ADMINS * VPN_USERS_PER_SUB + VPN_BULK)) users; restarted)"
			[ "$name" = main-small-cache ] && label="the same with an 8 MiB page cache ([$VPN_SMALL_CACHE_CONFIG]($VPN_SMALL_CACHE_CONFIG))"
			echo "| $label | $c | $(num "${vpn_rps[$k]}") | $(ms "${vpn_p50[$k]}") | $(ms "${vpn_p99[$k]}") | ${vpn_requests[$k]} | ${vpn_errs[$k]} | $(kb_mib "${vpn_peak[$k]}") |"
		done
	done
	echo
	echo "The main admin's list_all ($vpn_main_bytes bytes, streamed as it is read) one request at a time, median of five (curl): first byte after $(awk -v s="$vpn_ttfb" 'BEGIN { printf "%.1f ms", s * 1000 }'), the whole answer after $(awk -v s="$vpn_total" 'BEGIN { printf "%.1f ms", s * 1000 }'). Peak server RSS is VmRSS sampled every 20 ms during the measured wrk run; the main admin's runs are on a server restarted on the seeded data (VmRSS $(kb_mib "$vpn_rss_base") after its start), so that they show what serving list_all costs rather than what the seeding left in the allocator. With the default page cache (1 GiB) the database keeps the pages list_all read (about 40 MiB for these 120,000 summaries); the 8 MiB cache bounds that at the cost of reading them again."
	echo
	echo "vpnpanel server VmRSS after its runs: $(kb_mib "$vpn_rss_kb")."
	echo
	echo "## Server memory"
	echo
	echo "After the wrk runs: VmRSS $(kb_mib "$rss_kb") (${rss_kb:-?} kB), peak VmHWM $(kb_mib "$hwm_kb") (${hwm_kb:-?} kB)."
	echo
	echo "<details><summary>Raw wrk output</summary>"
	echo
	echo '```text'
	for c in "${CONNECTIONS[@]}"; do
		for target in native plugin; do
			echo "# $target, $c connections"
			grep -v '^WRK_RESULT ' "$tmp/wrk-$target-$c.txt"
			echo
		done
	done
	for f in "$tmp"/wrk-hotspot-*.txt; do
		name=${f##*/wrk-hotspot-}
		echo "# hotspot ${name%.txt}"
		grep -v '^WRK_RESULT ' "$f"
		echo
	done
	for f in "$tmp"/wrk-wgd-*.txt; do
		name=${f##*/wrk-wgd-}
		echo "# wgdashboard ${name%.txt}"
		grep -v '^WRK_RESULT ' "$f"
		echo
	done
	for f in "$tmp"/wrk-vpn-*.txt; do
		name=${f##*/wrk-vpn-}
		echo "# vpnpanel list_all ${name%.txt}"
		grep -v '^WRK_RESULT ' "$f"
		echo
	done
	echo '```'
	echo
	echo "</details>"
	echo
	echo "$NOTES_MARKER"
	if [ -n "$notes" ]; then printf '%s\n' "$notes"; fi
} >"$tmp/BENCHMARKS.md"
mv "$tmp/BENCHMARKS.md" "$OUT"

log "wrote $OUT"
for c in "${CONNECTIONS[@]}"; do
	log "c=$c: standalone $(num "${rps[standalone/$c]}") req/s, native $(num "${rps[native/$c]}") req/s, plugin $(num "${rps[plugin/$c]}") req/s ($(ratio "${rps[plugin/$c]}" "${rps[standalone/$c]}")), warm $(num "${rps[warm/$c]}") req/s ($(ratio "${rps[warm/$c]}" "${rps[standalone/$c]}"))"
done
if [ "${#script_langs[@]}" -gt 0 ]; then
	for c in "${CONNECTIONS[@]}"; do
		log "c=$c: Python $(num "${rps[py/$c]}") req/s (warm $(num "${rps[py-warm/$c]}")), JavaScript $(num "${rps[js/$c]}") req/s (warm $(num "${rps[js-warm/$c]}"))"
	done
fi
log "instantiate+call+drop: $total_us µs (instantiate $inst_us, call $call_us)"
for c in "${HOTSPOT_LIST_CONNECTIONS[@]}"; do
	log "hotspot get_voucher_users ($HOTSPOT_VOUCHERS) c=$c: $(num "${hs_rps[list/$c]}") req/s, p99 $(ms "${hs_p99[list/$c]}")"
done
for c in "${HOTSPOT_CREATE_CONNECTIONS[@]}"; do
	log "hotspot create_voucher c=$c: $(num "${hs_rps[create/$c]}") req/s, p99 $(ms "${hs_p99[create/$c]}")"
done
for c in "${WGD_CONNECTIONS[@]}"; do
	log "wgdashboard handshake c=$c: $(num "${wgd_rps[handshake/$c]}") req/s, p99 $(ms "${wgd_p99[handshake/$c]}"); getWireguardConfigurations: $(num "${wgd_rps[configurations/$c]}") req/s, p99 $(ms "${wgd_p99[configurations/$c]}")"
done
log "wgdashboard server VmRSS: $(kb_mib "$wgd_rss_kb")"
for c in "${VPN_CONNECTIONS[@]}"; do
	log "vpnpanel list_all main c=$c: $(num "${vpn_rps[main/$c]}") req/s, p99 $(ms "${vpn_p99[main/$c]}"), peak RSS $(kb_mib "${vpn_peak[main/$c]}"); 8 MiB cache: $(num "${vpn_rps[main-small-cache/$c]}") req/s, peak RSS $(kb_mib "${vpn_peak[main-small-cache/$c]}")"
done
log "vpnpanel list_all main: first byte $vpn_ttfb s, whole $vpn_total s"
log "vpnpanel bulk of $VPN_BULK users: ${vpn_bulk_s}s (median; ${vpn_bulk_times[*]}); with enable_wg1: ${vpn_bulk_wg_s}s"
for c in "${VPN_CONNECTIONS[@]}"; do
	log "vpnpanel list_all c=$c: sub-admin $(num "${vpn_rps[sub/$c]}") req/s, p99 $(ms "${vpn_p99[sub/$c]}"); main admin $(num "${vpn_rps[main/$c]}") req/s, p99 $(ms "${vpn_p99[main/$c]}")"
done
