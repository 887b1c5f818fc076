#!/usr/bin/env bash
# AlexNet (or BACKBONE=vgg16) with the hash layer, the OrthoHash loss and Adam, batch 64, on
# generated 224x224 images: images/s of `orthohash bench --backbone alexnet` with 1 and 2 threads
# beside PyTorch (bench/pytorch_alexnet.py, NCHW and channels_last, when torch is installed).
# ROUNDS (default 3) rounds alternate the programs; the table gives medians over the rounds and
# the ratios of the medians. STEPS (default 8) timed steps per run. orthohash also prints the
# GFLOP/s per core it reaches against the core's measured FMA peak, and its memory.
#
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for orthohash's runs (as bench/cnn.sh says why).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
steps=${STEPS:-8}
backbone=${BACKBONE:-alexnet}
source bench/common.sh
rate() { awk -v r="$1" -v t="$2" '$1 == r && $2 == t { print $3 }'; }
for r in $(seq "$rounds"); do
  out=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$bin" bench --backbone "$backbone" --batch-size 64 --steps "$steps" --threads 1,2)
  [ "$r" = 1 ] && echo "$out" | sed -n '1p;/^model/,$p'
  echo "$out" | rate 1 1 >> "$work/oh.1"
  echo "$out" | rate 1 2 >> "$work/oh.2"
  if [ $have_torch = 1 ]; then
    for t in 1 2; do
      for layout in "" --channels-last; do
        python3 bench/pytorch_alexnet.py --backbone "$backbone" --threads $t --steps "$steps" $layout \
          | python3 -c "import json,sys; print(json.load(sys.stdin)['images_per_second'])" >> "$work/pt$layout.$t"
      done
    done
  fi
done
side_by_side_header
for t in 1 2; do side_by_side "$t thread(s)" "$work/oh.$t" "$work/pt.$t" "$work/pt--channels-last.$t"; done
