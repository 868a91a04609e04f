#!/usr/bin/env bash
# Regenerates every generated file; with --check, fails if any differs from what is committed.
#   docs/schemas/*.schema.json   JSON Schemas of the output records (sensorpipe-worker schema …)
#   crds/*.yaml                  the SensorPipeline CRD (sensorpipe-operator crd)
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
[[ "${1:-}" == "--check" ]] && check=true

cargo build -q -p sensorpipe-worker -p sensorpipe-operator --locked
bin=target/debug/sensorpipe-worker
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/schemas"
for record in anomaly aggregate dead-letter; do
  "$bin" schema "$record" > "$tmp/schemas/$record.schema.json"
done
mkdir -p "$tmp/crds"
target/debug/sensorpipe-operator crd > "$tmp/crds/sensorpipe.io_sensorpipelines.yaml"
cp crds/README.md "$tmp/crds/"

if $check; then
  if ! diff -ru docs/schemas "$tmp/schemas" || ! diff -ru crds "$tmp/crds"; then
    echo "generated files are stale: run scripts/generate.sh" >&2
    exit 1
  fi
else
  rm -rf docs/schemas crds
  cp -r "$tmp/schemas" docs/schemas
  cp -r "$tmp/crds" crds
  echo "wrote docs/schemas/ and crds/"
fi
