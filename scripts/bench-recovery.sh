#!/usr/bin/env bash
# Recovery-time benchmark (docs/benchmarks.md, "Recovery after a kill"): an exactly-once worker killed with
# SIGKILL mid-stream and started again at once; prints the medians of the runs. Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
scripts/kafka.sh >/dev/null
cargo build --release --locked -p sensorpipe-worker --bin sensorpipe-worker
cd e2e && ../target/venv/bin/python bench_recovery.py "$@"
