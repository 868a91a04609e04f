#!/usr/bin/env bash
# The test command: formatting, lints, generated-file drift, Rust tests, and end-to-end tests with real tools.
# Installs what it needs (a Python virtualenv under target/) and skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Python virtualenv in target/venv (DuckDB, confluent-kafka, the tansu broker, the Helm engine, the API test double's aiohttp); Prometheus, promtool, Chromium and kubectl from apt"
scripts/venv.sh
missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# kubectl drives the cluster journey against the API test double (the package from Google Cloud's apt repository).
command -v kubectl >/dev/null 2>&1 || missing+=(kubectl)
if (( ${#missing[@]} )); then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "generated files are up to date (CRD, record schemas, the chart's CRD copy, dashboards, values table)"
scripts/generate.sh --check

step "Rust tests (the operator's reconcile tests start tansu from the virtualenv)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

step "end-to-end tests (runtime, one-machine mode and its page in Chromium, chart, alert rules, dashboards against a real Prometheus, the Kubernetes API test double and the cluster journey through it)"
cargo build -p sensorpipe-worker -p sensorpipe-operator --locked
target/venv/bin/python -m pytest -q e2e
