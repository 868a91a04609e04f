#!/usr/bin/env bash
# The test command: formatting, lints, generated-file drift, Rust tests, and end-to-end tests with real tools.
# Installs what it needs (a Python virtualenv and Apache Kafka under target/, podman and a Debian base image for the
# containers) and skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Python virtualenv in target/venv (DuckDB, confluent-kafka, the Helm engine, the API test double's aiohttp); Prometheus, promtool, Chromium and kubectl from apt"
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

step "Apache Kafka from Maven Central into target/kafka (skipped when there)"
scripts/kafka.sh

step "generated files are up to date (CRD, record schemas, the chart's CRD copy, dashboards, values table)"
scripts/generate.sh --check

step "the shared Apache Kafka broker of this run (KRaft, plaintext + SSL + SASL_SSL listeners)"
kafka_dir="$PWD/target/test-kafka"
rm -rf "$kafka_dir"
mkdir -p "$kafka_dir"
target/venv/bin/python e2e/brokers.py serve --dir "$kafka_dir" --security --parent-pid $$ \
  > "$kafka_dir/serve.out" 2> "$kafka_dir/serve.err" &
kafka_pid=$!
trap 'kill "$kafka_pid" 2>/dev/null; wait "$kafka_pid" 2>/dev/null || true' EXIT
for _ in $(seq 240); do
  [[ -s "$kafka_dir/cluster.json" ]] && break
  kill -0 "$kafka_pid" 2>/dev/null || { cat "$kafka_dir/serve.err" >&2; echo "Kafka did not start" >&2; exit 1; }
  sleep 0.5
done
[[ -s "$kafka_dir/cluster.json" ]] || { echo "Kafka did not start within 120 s (logs in $kafka_dir)" >&2; exit 1; }
export SENSORPIPE_TEST_KAFKA="$kafka_dir/cluster.json"
cat "$SENSORPIPE_TEST_KAFKA"

step "Rust tests (the operator's admin and reconcile tests on the shared broker)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

step "container images with podman: a Debian base from Debian's packages (cached in target/images), the operator and worker images from these binaries"
# Containers a killed earlier run left behind would still hold their loopback ports.
CONTAINERS_CONF="$PWD/images/containers.conf" scripts/base-image.sh >/dev/null
CONTAINERS_CONF="$PWD/images/containers.conf" podman rm -f -t 0 --filter label=io.sensorpipe.kube-double >/dev/null
cargo build -p sensorpipe-worker -p sensorpipe-operator --locked
scripts/images.sh --dev --base localhost/sensorpipe-base:bookworm

step "end-to-end tests (runtime and broker failures on Apache Kafka, one-machine mode and its page in Chromium, chart, the CRD through the API server's own validation (Go), alert rules, dashboards against a real Prometheus, the Kubernetes API test double and the cluster journey through it, its pods as containers)"
target/venv/bin/python -m pytest -q e2e
