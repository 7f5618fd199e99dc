#!/usr/bin/env bash
# All the tests: formatting, lints, unit + integration + simulation tests
# (cargo test starts real peers on loopback), then the scripted end-to-end run
# and LAN discovery as a third-party mDNS browser (python-zeroconf) sees it
# and across two network namespaces (as root; skipped where not allowed).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --quiet
bash scripts/e2e.sh
bash scripts/lan_check.sh
bash scripts/netns_check.sh
