#!/usr/bin/env bash
# Runtime benchmark: the worker's consume → process → produce rate next to a count-only consumer, same broker and
# data, same run, on Apache Kafka (installed by scripts/kafka.sh).
# Usage: scripts/bench-runtime.sh [--sensors N] [--duration 12h] [--partitions 4] [--delivery D] [--workers 1]
#        [--threads 0] [--worker PATH] (PATH: a build of another commit, to compare in one session)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
scripts/kafka.sh >/dev/null
cargo build --release --locked -p sensorpipe-worker --bin sensorpipe-worker --example count_consumer
cd e2e && ../target/venv/bin/python bench_runtime.py "$@"
