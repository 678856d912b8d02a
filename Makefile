# wasmgate: build, run, test and benchmark.
#
#   make build   plugins (wasm32-wasip2, and the Python and JavaScript examples) and the host, in release
#   make install the host binary into $(PREFIX)/bin (default ~/.local/bin)
#   make run     build, then serve config.yaml with data in ./data
#   make test    build, then the host's unit and end-to-end tests and the SDK's unit tests
#   make lint    clippy with warnings as errors on every crate
#   make bench   build, then bench/run.sh, which writes BENCHMARKS.md
#   make cross   the runtime-only host for each of $(CROSS_TARGETS) (docs/routers.md)
#   make cross-test  cross, then each under qemu-user through tests/routers/smoke.sh
#   make dist    cross, then a tarball per target in target/dist/
#   make bench-routers  cross, then bench/routers.py (the Routers section of BENCHMARKS.md)
#
# One target dir (target/) for everything; cargo serialises concurrent builds.

CARGO   ?= cargo
RUSTUP  ?= rustup

WASM_TARGET := wasm32-wasip2
# Guest crates built for $(WASM_TARGET); later plugins are added here.
PLUGINS ?= hello fixture hotspot wispanel wgdashboard license-portal outbound-probe vpnpanel
# Native crates whose tests `make test` runs: the host (lib and bin unit
# tests, the `e2e` integration test in tests/tests.rs, doc tests) and the SDK
# (plugins/sdk is an rlib that compiles natively; its router and http helpers
# have unit tests) and hotspot, whose pure parts (time, validation) have unit
# tests that run natively, as do wgdashboard's (validation, TOTP, address
# allocation, usage counters) and wispanel's (signed documents, license
# verdicts, enforcement plans). The other guest cdylibs in PLUGINS stay out.
# One cargo invocation per crate, on purpose: a single `--workspace` run
# unifies features with the SDK's wit-bindgen and rebuilds wasmtime a second
# time, while `-p wasmgate` reuses what `make build` compiled.
TEST_PACKAGES ?= wasmgate wasmgate-sdk hotspot wispanel wgdashboard license-portal vpnpanel

BIN      := target/release/wasmgate

# Python and JavaScript plugins: componentize-py (PyPI) in a venv and
# componentize-js (npm) in a node_modules, both under target/tools/, installed
# only when missing. Each is built against the world `wasmgate wit` writes for
# its config's grants, so it imports only what it is granted; it is rebuilt
# when its sources, the helpers or wit/ change (the host and the tools are
# order-only prerequisites).
PYTHON   ?= python3
NPM      ?= npm
TOOLS    := target/tools
COMPONENTIZE_PY_VERSION ?= 0.25.1
COMPONENTIZE_JS_VERSION ?= 0.23.0
COMPONENTIZE_PY := $(TOOLS)/py/bin/componentize-py
COMPONENTIZE_JS := $(TOOLS)/js/node_modules/.bin/componentize-js
WIT_FILES := $(wildcard wit/*.wit)
SCRIPT_PLUGINS := target/hello-py.wasm target/hello-js.wasm
CONFIG   ?= config.yaml
DATA_DIR ?= ./data

.PHONY: all build wasm-target plugins script-plugins host install run test lint bench bench-routers cross cross-test dist clean

all: build

build: plugins host script-plugins

# Adds the rustup target only when it is missing (no network otherwise).
wasm-target:
	@if ! $(RUSTUP) target list --installed | grep -qx '$(WASM_TARGET)'; then \
		echo "rustup target add $(WASM_TARGET)"; \
		$(RUSTUP) target add $(WASM_TARGET); \
	fi

plugins: wasm-target
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(PLUGINS))

host:
	$(CARGO) build --release -p wasmgate

# Puts the wasmgate binary on PATH for plugin authors: $(PREFIX)/bin.
PREFIX ?= $(HOME)/.local
install: host
	install -D -m 755 $(BIN) $(PREFIX)/bin/wasmgate
	@case ":$$PATH:" in *":$(PREFIX)/bin:"*) ;; *) echo "note: $(PREFIX)/bin is not on PATH";; esac

# Only when missing: `host` (phony) rebuilds it otherwise.
$(BIN):
	$(CARGO) build --release -p wasmgate

script-plugins: host $(SCRIPT_PLUGINS)

$(COMPONENTIZE_PY):
	$(PYTHON) -m venv $(TOOLS)/py
	$(TOOLS)/py/bin/pip install --quiet --disable-pip-version-check componentize-py==$(COMPONENTIZE_PY_VERSION)

$(COMPONENTIZE_JS):
	mkdir -p $(TOOLS)/js
	cd $(TOOLS)/js && { [ -f package.json ] || echo '{"private": true}' > package.json; } && \
		$(NPM) install --no-fund --no-audit --no-save @bytecodealliance/componentize-js@$(COMPONENTIZE_JS_VERSION)

target/hello-py.wasm: examples/hello-py/app.py examples/hello-py/config.yaml sdk/python/wasmgate.py $(WIT_FILES) | $(BIN) $(COMPONENTIZE_PY)
	$(BIN) wit --config examples/hello-py/config.yaml --plugin hello --exports handler,admin --out target/hello-py/wit
	$(COMPONENTIZE_PY) -q -d target/hello-py/wit -w plugin componentize app -p examples/hello-py -p sdk/python -o $@

target/hello-js.wasm: examples/hello-js/app.js examples/hello-js/config.yaml sdk/js/wasmgate.js $(WIT_FILES) | $(BIN) $(COMPONENTIZE_JS)
	$(BIN) wit --config examples/hello-js/config.yaml --plugin hello --exports handler,admin --out target/hello-js/wit
	$(COMPONENTIZE_JS) examples/hello-js/app.js --wit target/hello-js/wit -n plugin -o $@

run: build
	$(BIN) serve --config $(CONFIG) --data-dir $(DATA_DIR)

# Runs every package's tests even when an earlier one fails, then fails if any did.
test: build
	@status=0; for p in $(TEST_PACKAGES); do \
		echo "$(CARGO) test --release -p $$p"; \
		$(CARGO) test --release --no-fail-fast -p $$p || status=1; \
	done; exit $$status

# The bench binary carries `bench-instantiate` and `--bench-native`, which the
# production build leaves out.
# Clippy with warnings as errors on every crate: the host natively (with and
# without the bench feature, and as router builds: without the compiler,
# with and without the capabilities), the SDK natively, the guests for wasm.
lint: wasm-target
	$(CARGO) clippy --release -p wasmgate --tests -- -D warnings
	$(CARGO) clippy --release -p wasmgate --features bench --bins -- -D warnings
	$(CARGO) clippy --release -p wasmgate --no-default-features --features $(ROUTER_FEATURES) --tests -- -D warnings
	$(CARGO) clippy --release -p wasmgate --no-default-features --lib --bins -- -D warnings
	$(CARGO) clippy --release -p wasmgate-sdk --tests -- -D warnings
	$(CARGO) clippy --release --target $(WASM_TARGET) $(addprefix -p ,$(PLUGINS)) -- -D warnings

bench: build
	$(CARGO) build --release -p wasmgate --features bench
	bash bench/run.sh

# Router builds: no compiler (precompiled plugins only), the capabilities in
# ROUTER_FEATURES, statically linked, with the Debian cross compilers.
CROSS_TARGETS   ?= aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf x86_64-unknown-linux-musl
ROUTER_FEATURES ?= net,wireguard,outbound

cross:
	@for t in $(CROSS_TARGETS); do \
		echo "scripts/cross.sh $$t $(ROUTER_FEATURES)"; \
		CARGO=$(CARGO) scripts/cross.sh $$t $(ROUTER_FEATURES) || exit 1; \
	done

# The smoke test per target, then the x86_64 tarball's systemd unit and
# procd script (tests/routers/packaging.sh).
cross-test: plugins $(BIN) cross
	@for t in $(CROSS_TARGETS); do tests/routers/smoke.sh $$t || exit 1; done
	scripts/dist.sh x86_64-unknown-linux-musl
	tests/routers/packaging.sh x86_64-unknown-linux-musl

# Sizes, idle RSS, start, Pulley against Cranelift, memory under load:
# the "Routers" section of BENCHMARKS.md.
bench-routers: plugins $(BIN) cross
	$(PYTHON) bench/routers.py

dist: plugins $(BIN) cross
	@for t in $(CROSS_TARGETS); do scripts/dist.sh $$t || exit 1; done

clean:
	$(CARGO) clean
