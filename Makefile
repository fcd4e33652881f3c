# Ferrishop developer tasks. `make` (or `make help`) lists them.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# buf is run through npx, pinned, so every machine lints the protos with the same rules.
BUF_VERSION ?= 1.75.0
BUF := npx --yes @bufbuild/buf@$(BUF_VERSION)
SERVICES := gateway user order payment inventory

.PHONY: help infra-up dev test lint fmt bench bench-gateway deploy-check ensure-nextest

help: ## List the targets
	@echo "Ferrishop — make <target>"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

infra-up: ## Start Postgres, RabbitMQ, NATS (JetStream) and Kafka (tansu) locally, if not running
	scripts/infra-up.sh

dev: ## Start the infra, build and run all five services (Ctrl-C stops them)
	scripts/dev.sh

test: ensure-nextest ## Run every test of the workspace with cargo-nextest (needs `make infra-up`; installs the deployment checks' tools)
	scripts/deploy-tools.sh
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace

lint: ## rustfmt check, clippy and rustdoc with warnings denied, buf lint of proto/
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps
	cd proto && $(BUF) lint

deploy-check: ensure-nextest ## Validate compose, the Dockerfile and the k8s overlays (installs the tools first)
	scripts/deploy-tools.sh
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run -p deploy-checks

fmt: ## Format the Rust code
	$(CARGO) fmt --all

bench: ## Run the benchmarks
	$(CARGO) bench --workspace

bench-gateway: ## wrk: GET /users/me through the gateway, direct, nginx and a bare hyper proxy (release build)
	scripts/bench-gateway.sh

ensure-nextest:
	@command -v cargo-nextest >/dev/null 2>&1 || { \
		echo "cargo-nextest not found, installing it (cargo install cargo-nextest --locked)"; \
		$(CARGO) install cargo-nextest --locked; }
