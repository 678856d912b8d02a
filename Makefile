# wasmgate: build, run, test and benchmark.
#
#   make build   plugins (wasm32-wasip2) and the host, both in release
#   make run     build, then serve config.yaml with data in ./data
#   make test    build, then the host's unit and end-to-end tests
#   make bench   build, then bench/run.sh, which writes BENCHMARKS.md
#
# One target dir (target/) for everything; cargo serialises concurrent builds.

CARGO   ?= cargo
RUSTUP  ?= rustup

WASM_TARGET := wasm32-wasip2
# Guest crates built for $(WASM_TARGET); later plugins are added here.
PLUGINS ?= hello fixture
# cdylib guest crates that only make sense on $(WASM_TARGET): kept out of the
# native test build. The SDK (plugins/sdk, an rlib) compiles natively and its
# unit tests (router, http helpers) run in `make test`.
GUEST_CRATES ?= $(PLUGINS)

BIN      := target/release/wasmgate
CONFIG   ?= config.yaml
DATA_DIR ?= ./data

.PHONY: all build wasm-target plugins host run test bench clean

all: build

build: plugins host

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

run: build
	$(BIN) serve --config $(CONFIG) --data-dir $(DATA_DIR)

# Every native workspace member: the host's lib and bin unit tests, its `e2e`
# integration test (tests/tests.rs), the SDK's unit tests and doc tests.
test: build
	$(CARGO) test --release --workspace $(addprefix --exclude ,$(GUEST_CRATES))

bench: build
	bash bench/run.sh

clean:
	$(CARGO) clean
