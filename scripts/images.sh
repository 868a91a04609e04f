#!/usr/bin/env bash
# Builds the operator and worker images with podman from images/Containerfile: the binaries first (release
# builds), then the images, tagged as the chart names them (ghcr.io/sensorpipe/sensorpipe-{operator,worker}:<the
# chart's appVersion>).
#
#   scripts/images.sh [--dev] [--base IMAGE] [--tag TAG] [--save DIR]
#
#   --dev         use the dev-profile binaries (debug info stripped from the copies) instead of release builds:
#                 the test command's images, since it has built those already and a release build takes minutes
#   --base IMAGE  the runtime base (default docker.io/library/debian:bookworm-slim; where no registry is
#                 reachable, scripts/base-image.sh makes one and prints its name)
#   --tag TAG     image tag (default: appVersion in charts/sensorpipe/Chart.yaml)
#   --save DIR    also write DIR/sensorpipe-{operator,worker}.tar (podman save, docker-archive), for
#                 `kind load image-archive` or `k3d image import`
#
# Prints one line per image: the component and the image's name ("operator ghcr.io/…").
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="$PWD/images/containers.conf"

profile=release base=docker.io/library/debian:bookworm-slim save=""
tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/sensorpipe/Chart.yaml)
while (( $# )); do
  case "$1" in
    --dev) profile=dev ;;
    --base) base=$2; shift ;;
    --tag) tag=$2; shift ;;
    --save) save=$2; shift ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
command -v podman >/dev/null 2>&1 || { echo "podman is missing (apt-get install podman runc)" >&2; exit 1; }

cargo build -q --locked --profile "$profile" -p sensorpipe-operator -p sensorpipe-worker
out=target/$([[ $profile == dev ]] && echo debug || echo "$profile")
context=target/images/context
rm -rf "$context" && mkdir -p "$context"
for bin in sensorpipe-operator sensorpipe-worker; do
  if [[ $profile == dev ]]; then objcopy --strip-debug "$out/$bin" "$context/$bin"; else cp "$out/$bin" "$context/"; fi
done

for component in operator worker; do
  image=ghcr.io/sensorpipe/sensorpipe-$component:$tag
  log=target/images/build-$component.log
  podman build --network host --build-arg "BASE=$base" --target "$component" -t "$image" \
    -f images/Containerfile "$context" >"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }
  echo "$component $image"
  if [[ -n $save ]]; then
    mkdir -p "$save"
    rm -f "$save/sensorpipe-$component.tar"
    podman save -q --format docker-archive -o "$save/sensorpipe-$component.tar" "$image"
  fi
done
