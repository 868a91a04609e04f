#!/usr/bin/env bash
# The main job, on one machine: simulate a day of the smart building and backtest the reference pipeline on it.
# Outputs land in target/demo/ (override with OUT=dir); pass a pipeline file to try your own rules.
set -euo pipefail
cd "$(dirname "$0")/.."
pipeline=${1:-examples/smart-building.yaml}
out=${OUT:-target/demo}
mkdir -p "$out"

cargo build --release --locked -q -p sensorpipe-worker
bin=target/release/sensorpipe-worker

echo "simulating one day of 100 sensors in 5 zones -> $out/day.jsonl"
"$bin" simulate --truth "$out/truth.json" --output "$out/day.jsonl"
echo "replaying through $pipeline -> $out/result/"
"$bin" replay --pipeline "$pipeline" --input "$out/day.jsonl" --out-dir "$out/result"

echo
echo "first anomalies (all in $out/result/anomalies.jsonl):"
head -n 8 "$out/result/anomalies.jsonl"
echo
echo "injected episodes: $out/truth.json; aggregates: $out/result/aggregates.jsonl; dead letters: $out/result/dead_letters.jsonl"
