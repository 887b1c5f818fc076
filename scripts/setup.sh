#!/usr/bin/env bash
# Installs what orthohash needs from Debian, if it is missing: OpenBLAS, Open MPI, zlib,
# libjpeg-turbo and libpng (image decoding), pkg-config and the Fashion-MNIST images. Run as root (or with sudo available).
#   scripts/setup.sh --scaling   also what deploy/scaling.sh and scripts/plots.py need: Debian's
#                                python3-matplotlib (with numpy, for /usr/bin/python3) and iproute2
#                                (ip, tc). The tests install these too (the plots are tested).
set -euo pipefail
packages=(libopenblas-dev libopenmpi-dev openmpi-bin zlib1g-dev libturbojpeg0-dev libpng-dev pkg-config dataset-fashion-mnist)
[ "${1:-}" = --scaling ] && packages+=(python3-matplotlib iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: the Swift toolchain is not on PATH (https://swift.org/install)" >&2; exit 1; }
