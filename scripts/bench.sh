#!/usr/bin/env bash
# The bench command: engine throughput (10 000 and 1 000 sensors per partition) and engine memory for
# 100 000 sensors. Prints figures; asserts nothing about speed. Not part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked -p sensorpipe-worker --bench engine -- --sensors 10000
cargo bench --locked -p sensorpipe-worker --bench engine -- --sensors 1000
cargo bench --locked -p sensorpipe-worker --bench memory
