#!/usr/bin/env bash
# The main job, on one machine: run the reference pipeline (or the SensorPipeline manifest given as the first
# argument) with an embedded Kafka broker, two workers and simulated sensors; anomalies print here as they fire,
# and the live page is at http://127.0.0.1:8080/ (LISTEN=addr:port to change). Ctrl-C stops it.
# More options (your own input file, a real Kafka cluster, more workers): target/release/sensorpipe run --help.
set -euo pipefail
cd "$(dirname "$0")/.."
pipeline=${1:-examples/smart-building.yaml}

cargo build --release --locked -q -p sensorpipe-worker -p sensorpipe-operator
exec target/release/sensorpipe run "$pipeline" --simulate "${RATE:-500}" --listen "${LISTEN:-127.0.0.1:8080}"
