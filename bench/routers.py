#!/usr/bin/env python3
"""Router figures (`make bench-routers`): binary sizes, idle RSS and start
time with precompiled plugins, Cranelift against Pulley, and memory under
two loads with the server and router profiles. Writes its section of
BENCHMARKS.md between the `routers:begin` and `routers:end` markers (kept by
bench/run.sh, which rewrites the rest).

Needs: target/release/wasmgate (make build), the router binaries of
CROSS_TARGETS (make cross), the plugins (make plugins), wrk, and for the
aarch64 cross-check qemu-aarch64-static.
"""

import http.client
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = os.path.join(ROOT, "target/release/wasmgate")
WASM = os.path.join(ROOT, "target/wasm32-wasip2/release")
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "BENCHMARKS.md"))
DURATION = os.environ.get("BENCH_DURATION", "10s")
BEGIN, END = "<!-- routers:begin -->", "<!-- routers:end -->"


def router_bin(target):
    return os.path.join(ROOT, "target", target, "router", "wasmgate")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def mib(kb):
    return f"{kb / 1024:.1f} MiB"


# The four bundled plugins the RSS budget names, with the grants they need.
FOUR = {
    "hotspot": ("hotspot.wasm", "/api/", 64,
                '{ kv: true, keys: true, crypto: true, config: true, log: true, net: { links: ["br-guest*"] } }'),
    "wgdashboard": ("wgdashboard.wasm", "/wgd/", 64,
                    '{ kv: true, keys: true, crypto: true, config: true, log: true, ratelimit: true, wireguard: { devices: ["wg*"] }, net: { links: ["wg*"], write: true } }'),
    "vpnpanel": ("vpnpanel.wasm", "/api/v1/", 128,
                 '{ kv: true, keys: true, crypto: true, config: true, log: true, jobs: true, ratelimit: true, outbound: { hosts: ["127.0.0.1:9"] }, wireguard: { devices: ["vpnwg*"] }, net: { links: ["vpnwg*"], write: true } }'),
    "wispanel": ("wispanel.wasm", "/wis/", 128,
                 '{ kv: true, keys: true, crypto: true, config: true, log: true, ratelimit: true, outbound: { hosts: ["127.0.0.1:9"] } }'),
}
HELLO = ("hello.wasm", "/hello/", 32, "{ kv: true, config: true, log: true }")


class Bench:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="wasmgate-routers-")
        self.key = os.path.join(self.dir, "compile.key")
        out = subprocess.run([FULL, "package", "keygen", "--out", self.key],
                             check=True, capture_output=True, text=True).stdout
        self.public = re.search(r"ed25519:[A-Za-z0-9+/=]+", out).group(0)

    def config(self, name, plugins, sections="", wasm=None):
        """Writes a config; `plugins`: name -> (file, prefix, memory_mb, grants)."""
        port = free_port()
        admin = free_port()
        lines = [f"data_dir: {self.dir}/{name}-data",
                 f'admin: {{ listen: "127.0.0.1:{admin}" }}',
                 sections,
                 f'trust:\n  compilers:\n    - {{ name: bench, key: "{self.public}" }}',
                 "plugins:"]
        for p, (file, prefix, mem, grants) in plugins.items():
            path = (wasm or {}).get(p, os.path.join(WASM, file))
            lines.append(f"  - name: {p}\n    wasm: {path}\n"
                         f'    mounts: [{{ listen: "127.0.0.1:{port}", prefix: {prefix} }}]\n'
                         f"    grants: {grants}\n"
                         f"    limits: {{ memory_mb: {mem}, timeout_ms: 10000, max_body_bytes: 1048576, max_response_bytes: 16777216 }}\n"
                         f"    settings: {{ greeting: hello, max_notes: 1000000 }}")
        path = os.path.join(self.dir, f"{name}.yaml")
        with open(path, "w") as f:
            f.write("\n".join(x for x in lines if x) + "\n")
        return path, port, admin

    def compile(self, config, target):
        out = os.path.join(self.dir, f"aot-{os.path.basename(config)}-{target}")
        subprocess.run([FULL, "compile", "--config", config, "--target", target,
                        "--key", self.key, "--out", out], check=True, capture_output=True)
        return out


class Server:
    def __init__(self, binary, config, prefix=()):
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([*prefix, binary, "serve", "--config", config, "--strict"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.proc.stdout:
            if line.strip() == "ready":
                self.ready_ms = (time.perf_counter() - self.t0) * 1000
                break
        else:
            raise RuntimeError(f"{binary} exited before ready")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def status(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wrk(url, conns, script=None):
    args = ["wrk", "-t2", f"-c{conns}", f"-d{DURATION}", "--latency", url]
    if script:
        args[1:1] = ["-s", script]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, out


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def sizes(lines):
    lines.append("### Binary size\n")
    lines.append("Stripped runtime-only binaries (`make cross`: no compiler, profile `router`: "
                 "`opt-level = \"z\"`, fat LTO, one codegen unit), every capability built in:\n")
    lines.append("| target | bytes | MiB |")
    lines.append("| --- | ---: | ---: |")
    for t in ("aarch64-unknown-linux-musl", "armv7-unknown-linux-gnueabihf", "x86_64-unknown-linux-musl"):
        b = router_bin(t)
        if os.path.exists(b):
            n = os.path.getsize(b)
            lines.append(f"| {t} | {n:,} | {n / 2**20:.2f} |")
    for label, path in (("aarch64-unknown-linux-musl, `net` only (no wireguard, no outbound)",
                         os.path.join(ROOT, "target/aarch64-unknown-linux-musl/router/wasmgate-net-only")),
                        ("aarch64-unknown-linux-musl, no capability with a dependency of its own",
                         os.path.join(ROOT, "target/aarch64-unknown-linux-musl/router/wasmgate-bare"))):
        if os.path.exists(path):
            n = os.path.getsize(path)
            lines.append(f"| {label} | {n:,} | {n / 2**20:.2f} |")
    n = os.path.getsize(FULL)
    lines.append(f"| x86_64-unknown-linux-gnu, the full build (`make build`: Cranelift, symbols kept) | {n:,} | {n / 2**20:.2f} |")
    lines.append("")


def idle(b, lines):
    lines.append("### Idle memory and start with precompiled plugins\n")
    lines.append("hotspot, wgdashboard, vpnpanel and wispanel loaded from artefacts of `wasmgate compile`, "
                 "`memory: { profile: router }`; RSS read 3 s after `ready`; start is the time from spawning "
                 "the process to its `ready` line (the first start creates the database; the median of 5 restarts).\n")
    lines.append("| binary | first start | start (median of 5) | idle RSS |")
    lines.append("| --- | ---: | ---: | ---: |")
    runs = [("x86_64-unknown-linux-musl", (), "x86_64-unknown-linux-musl router build, native")]
    if shutil.which("qemu-aarch64-static") and os.path.exists(router_bin("aarch64-unknown-linux-musl")):
        runs.append(("aarch64-unknown-linux-musl", ("qemu-aarch64-static",),
                     "aarch64-unknown-linux-musl under qemu-user (RSS includes qemu's translator)"))
    for target, prefix, label in runs:
        binary = router_bin(target)
        if not os.path.exists(binary):
            continue
        src, _, _ = b.config(f"idle-src-{target}", FOUR, "memory: { profile: router }")
        aot = b.compile(src, target)
        cfg, _, _ = b.config(f"idle-{target}", FOUR, "memory: { profile: router }",
                             {p: os.path.join(aot, f"{p}.aot") for p in FOUR})
        starts, rss = [], []
        for i in range(6):
            s = Server(binary, cfg, prefix)
            time.sleep(3)
            if i == 0:
                first = s.ready_ms
            else:
                starts.append(s.ready_ms)
                rss.append(s.status("VmRSS"))
            s.stop()
        lines.append(f"| {label} | {first:.0f} ms | {statistics.median(starts):.0f} ms | "
                     f"{mib(statistics.median(rss))} |")
    lines.append("")


def pulley(b, lines):
    lines.append("### Cranelift against Pulley (x86_64, same machine, same run)\n")
    lines.append(f"The full build serving each plugin as native code (`runtime.pulley: false`) and as Pulley "
                 f"bytecode in wasmtime's interpreter (`runtime.pulley: true`, what 32-bit ARM runs); "
                 f"wrk -t2 for {DURATION}. hotspot `get_voucher_users` lists 100 vouchers (about 30 kB).\n")
    lines.append("| request | connections | Cranelift req/s | Pulley req/s | Pulley / Cranelift |")
    lines.append("| --- | ---: | ---: | ---: | ---: |")
    results = {}
    for mode in ("false", "true"):
        cfg, port, admin = b.config(f"pulley-{mode}", {"hello": HELLO, "hotspot": FOUR["hotspot"]},
                                    f"runtime: {{ pulley: {mode} }}\n"
                                    "http: { max_connections_per_client: 1024 }")
        s = Server(FULL, cfg)
        token = open(f"{b.dir}/pulley-{mode}-data/admin.token").read().strip()
        key = setup_hotspot(admin, token, port, 100)
        results[("hello", mode)] = wrk(f"http://127.0.0.1:{port}/hello/", 32)[0]
        script = os.path.join(b.dir, "key.lua")
        with open(script, "w") as f:
            f.write(f'wrk.headers["X-API-Key"] = "{key}"\n')
        results[("hotspot", mode)] = wrk(
            f"http://127.0.0.1:{port}/api/?action=get_voucher_users", 4, script)[0]
        s.stop()
    for req, conns in (("hello", 32), ("hotspot", 4)):
        c, p = results[(req, "false")], results[(req, "true")]
        label = "`GET /hello/`" if req == "hello" else "hotspot `get_voucher_users` (100 vouchers)"
        lines.append(f"| {label} | {conns} | {c:,.0f} | {p:,.0f} | {p / c:.2f}x |")
    lines.append("")


def call(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def setup_hotspot(admin, token, port, vouchers):
    auth = {"Authorization": f"Bearer {token}"}
    call(admin, "PUT", "/plugins/hotspot/admin/settings", '{"api_enabled":true,"get_enabled":true}', auth)
    _, data = call(admin, "POST", "/plugins/hotspot/admin/api-key", None, auth)
    key = re.search(rb'"key":"([^"]+)"', data).group(1).decode()
    for i in range(vouchers):
        status, _ = call(port, "POST", "/api/",
                         f'{{"action":"create_voucher","username":"guest{i}","passcode":"p{i}"}}',
                         {"X-API-Key": key, "content-type": "application/json"})
        assert status == 200, status
    return key


def write_notes(port, total_bytes, note_bytes=64 << 10, threads=4):
    body = '{"title":"n","body":"' + "x" * note_bytes + '"}'
    per = total_bytes // note_bytes // threads

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(per):
            c.request("POST", "/hello/notes", body=body, headers={"content-type": "application/json"})
            r = c.getresponse()
            r.read()
            assert r.status == 201, r.status
        c.close()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def memory(b, lines):
    lines.append("### Memory under load: server and router profiles\n")
    lines.append("Two loads on a fresh server each, hello alone: **connections**: wrk -c6000 against "
                 "`GET /hello/` for the run's duration; **notes**: 200 MB of notes written (3,200 × 64 KB, "
                 "4 keep-alive clients). Peak is VmHWM, settled is VmRSS 10 s after the load ended. The "
                 "server profile's run lifts `http.max_connections` to 8192 so that all 6,000 connections are "
                 "served; the router profile keeps its 256 (the rest are answered 503 and closed).\n")
    lines.append("| binary | profile | load | peak | settled |")
    lines.append("| --- | --- | --- | ---: | ---: |")
    runs = [(FULL, "server", "x86_64 glibc, full build"),
            (FULL, "router", "x86_64 glibc, full build")]
    musl = router_bin("x86_64-unknown-linux-musl")
    if os.path.exists(musl):
        runs.append((musl, "router", "x86_64 musl, router build"))
    for binary, profile, label in runs:
        for load in ("connections", "notes"):
            sections = f"memory: {{ profile: {profile} }}\nhttp: {{ max_connections_per_client: 100000"
            sections += ", max_connections: 8192 }" if profile == "server" else " }"
            name = f"mem-{profile}-{load}-{os.path.basename(os.path.dirname(os.path.dirname(binary)))}"
            plugins = {"hello": HELLO}
            wasm = None
            if binary != FULL:
                src, _, _ = b.config(name + "-src", plugins, sections)
                aot = b.compile(src, "x86_64-unknown-linux-musl")
                wasm = {"hello": os.path.join(aot, "hello.aot")}
            cfg, port, _ = b.config(name, plugins, sections, wasm)
            s = Server(binary, cfg)
            if load == "connections":
                try:
                    wrk(f"http://127.0.0.1:{port}/hello/", 6000)
                except subprocess.CalledProcessError:
                    pass
            else:
                write_notes(port, 200 << 20)
            time.sleep(10)
            lines.append(f"| {label} | {profile} | {load} | {mib(s.status('VmHWM'))} | {mib(s.status('VmRSS'))} |")
            s.stop()
    lines.append("")


def main():
    raise_nofile()
    b = Bench()
    lines = [BEGIN, "## Routers", "",
             f"Measured by `make bench-routers` (bench/routers.py) on {time.strftime('%Y-%m-%d')}, "
             f"{os.cpu_count()} CPUs; the budgets are in docs/routers.md.", ""]
    only = sys.argv[1:] or ["sizes", "idle", "pulley", "memory"]
    for part in only:
        {"sizes": lambda: sizes(lines), "idle": lambda: idle(b, lines),
         "pulley": lambda: pulley(b, lines), "memory": lambda: memory(b, lines)}[part]()
        print("\n".join(lines[-12:]), flush=True)
    lines.append(END)
    text = open(OUT).read() if os.path.exists(OUT) else ""
    block = "\n".join(lines)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(OUT, "w") as f:
        f.write(text)
    shutil.rmtree(b.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
