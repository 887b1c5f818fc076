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
swift build -c release 2>&1 | tail -1
bin=$PWD/.build/release/orthohash
have_torch=0
python3 -c "import torch" 2>/dev/null && have_torch=1
[ $have_torch = 1 ] || echo "torch is not installed: orthohash alone"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rate() { awk -v r="$1" -v t="$2" '$1 == r && $2 == t { print $3 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
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
printf "%-12s %14s %14s %14s %10s %12s\n" threads "orthohash im/s" "PyTorch NCHW" "channels_last" "vs NCHW" "vs ch_last"
for t in 1 2; do
  o=$(median < "$work/oh.$t")
  if [ $have_torch = 1 ]; then
    p=$(median < "$work/pt.$t"); c=$(median < "$work/pt--channels-last.$t")
    printf "%-12s %14.2f %14.2f %14.2f %9.2fx %11.2fx\n" "$t" "$o" "$p" "$c" "$(awk -v a="$o" -v b="$p" 'BEGIN { print a / b }')" \
      "$(awk -v a="$o" -v b="$c" 'BEGIN { print a / b }')"
  else
    printf "%-12s %14.2f\n" "$t" "$o"
  fi
done
