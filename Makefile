# krust: build, run and test. `make help` lists the targets.
#
#   make run    install dependencies, build (release) and run a server in the
#               foreground with its data in ./data; Ctrl-C stops it
#   make test   install dependencies, then tests (nextest), format check and clippy

CARGO ?= cargo
DATA_DIR ?= ./data
RUN_ARGS ?=

.PHONY: help deps build build-debug run test fmt fmt-check lint clean

help:
	@echo "make run     build and run krust server in the foreground (data in $(DATA_DIR))"
	@echo "make test    unit and end-to-end tests, format check, clippy"
	@echo "make build   release build: target/release/krust"
	@echo "make fmt     format the code"
	@echo "make lint    clippy with warnings as errors"
	@echo "make deps    install system dependencies (scripts/install-deps.sh)"

deps:
	bash scripts/install-deps.sh

build:
	$(CARGO) build --release -p krust

# The end-to-end tests run target/debug/krust: build it before running them.
build-debug:
	$(CARGO) build -p krust

run: deps build
	./target/release/krust server --data-dir $(DATA_DIR) $(RUN_ARGS)

# Runs every check even when an earlier one fails, and fails if any failed.
test: deps build-debug
	@status=0; \
	$(CARGO) nextest run --workspace --no-fail-fast || status=1; \
	$(CARGO) fmt --all -- --check || { echo "make test: code is not formatted; run 'make fmt'"; status=1; }; \
	$(CARGO) clippy --workspace --all-targets -- -D warnings || status=1; \
	exit $$status

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
