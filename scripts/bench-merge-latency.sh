#!/usr/bin/env bash
# Second-stage latency benchmark (docs/benchmarks.md, "Second stage"): zone windows (two stages) against sensor
# windows (one stage) on live readings. Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
scripts/kafka.sh >/dev/null
cargo build --release --locked -p sensorpipe-worker --bin sensorpipe-worker
cd e2e && ../target/venv/bin/python bench_merge_latency.py "$@"
