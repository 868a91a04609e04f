#!/usr/bin/env bash
# Regenerates every generated file; with --check, fails if any differs from what is committed.
#   docs/schemas/*.schema.json           JSON Schemas of the output records (sensorpipe-worker schema …)
#   crds/*.yaml                          the SensorPipeline CRD (sensorpipe-operator crd)
#   charts/sensorpipe/files/crds/        the chart's copy of crds/
#   charts/sensorpipe/dashboards/*.json  Grafana dashboards (scripts/dashboards.py, Grafana's Foundation SDK)
#   charts/sensorpipe/README.md          its values table, from the comments in values.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
[[ "${1:-}" == "--check" ]] && check=true

cargo build -q -p sensorpipe-worker -p sensorpipe-operator --locked
scripts/venv.sh
py=target/venv/bin/python
bin=target/debug/sensorpipe-worker
chart=charts/sensorpipe
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/docs/schemas" "$tmp/crds" "$tmp/$chart/files/crds" "$tmp/$chart/dashboards"
for record in anomaly aggregate dead-letter; do
  "$bin" schema "$record" > "$tmp/docs/schemas/$record.schema.json"
done
target/debug/sensorpipe-operator crd > "$tmp/crds/sensorpipe.io_sensorpipelines.yaml"
cp crds/README.md "$tmp/crds/"
cp "$tmp/crds/sensorpipe.io_sensorpipelines.yaml" "$tmp/$chart/files/crds/"
"$py" scripts/dashboards.py "$tmp/$chart/dashboards"
"$py" scripts/chart_values_doc.py "$chart/values.yaml" "$chart/README.md" "$tmp/$chart/README.md"

generated=(docs/schemas crds "$chart/files/crds" "$chart/dashboards" "$chart/README.md")
if $check; then
  stale=false
  for path in "${generated[@]}"; do
    if [[ -d "$tmp/$path" ]]; then
      diff -ru "$path" "$tmp/$path" || stale=true
    else
      diff -u "$path" "$tmp/$path" || stale=true
    fi
  done
  if $stale; then
    echo "generated files are stale: run scripts/generate.sh" >&2
    exit 1
  fi
else
  for path in "${generated[@]}"; do
    rm -rf "$path"
    mkdir -p "$(dirname "$path")"
    cp -r "$tmp/$path" "$path"
  done
  echo "wrote ${generated[*]}"
fi
