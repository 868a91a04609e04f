#!/usr/bin/env bash
# The long mode of the randomized fault trials (e2e/test_chaos.py): 20 trials by default, on a broker of the
# test session's own. `scripts/chaos.sh [TRIALS] [SEED]`; every failing trial prints the seed that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
scripts/kafka.sh
cargo build -p sensorpipe-worker --locked
export SENSORPIPE_CHAOS_TRIALS="${1:-20}"
if [[ -n "${2:-}" ]]; then export SENSORPIPE_CHAOS_SEED="$2"; fi
exec target/venv/bin/python -m pytest -q e2e/test_chaos.py
