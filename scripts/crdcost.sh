#!/usr/bin/env bash
# Judges CRD files with the Kubernetes API server's own CRD validation, CEL cost estimates included
# (e2e/crdcost, k8s.io/apiextensions-apiserver). `scripts/crdcost.sh FILE...`; exit 1 when one would be refused.
# Go modules and build cache live in target/go; the first build takes a few minutes, later ones none.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v go >/dev/null 2>&1; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq --no-install-recommends golang-go >/dev/null
fi
export GOMODCACHE="$root/target/go/mod" GOCACHE="$root/target/go/cache" GOFLAGS=-mod=readonly
(cd "$root/e2e/crdcost" && go build -o "$root/target/go/crdcost" .)
exec "$root/target/go/crdcost" "$@"
