#!/usr/bin/env bash
# Makes the images' runtime base without a registry: a minimal Debian bookworm (debootstrap --variant=minbase from
# the Debian mirror apt already uses), imported into podman as localhost/sensorpipe-base:bookworm. The root
# filesystem's archive is cached in target/images/, so a fresh podman store only re-imports it (seconds).
# Installs podman, runc and debootstrap with apt when missing. Prints the image name.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="$PWD/images/containers.conf"
image=localhost/sensorpipe-base:bookworm
cache=target/images/debian-bookworm-minbase.tar

need=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
if (( ${#need[@]} )); then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if podman image exists "$image"; then echo "$image"; exit 0; fi
if [[ ! -s "$cache" ]]; then
  # The first Debian archive apt is configured with (deb822 `URIs:` or one-line `deb` entries, not comments).
  mirror=$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  root=$(mktemp -d target/images-rootfs.XXXX)
  trap 'rm -rf "$root"' EXIT
  mkdir -p target/images
  echo "debootstrap --variant=minbase bookworm from $mirror" >&2
  debootstrap --variant=minbase bookworm "$root" "$mirror" >target/images/debootstrap.log 2>&1 \
    || { tail -20 target/images/debootstrap.log >&2; exit 1; }
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -cf "$cache.part" .
  mv "$cache.part" "$cache"
fi
podman import --quiet --change 'CMD ["/bin/bash"]' "$cache" "$image" >/dev/null
echo "$image"
