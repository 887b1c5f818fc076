#!/usr/bin/env bash
# The main job: install what is missing, build in release mode, and train on Fashion-MNIST with
# quick settings (MLP 1024,1024, 64 bits, 3 epochs), data-parallel with mpirun over the local
# cores (deploy/launch.sh), printing mAP. Extra arguments go to `orthohash train`. Each run
# replaces the previous one in runs/fashion-mnist (--overwrite).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release 2>&1 | tail -1
deploy/launch.sh -- --backbone mlp --hidden 1024,1024 --nbit 64 --epochs 3 --run-dir runs/fashion-mnist --overwrite "$@"
