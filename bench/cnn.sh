#!/usr/bin/env bash
# The cnn on Fashion-MNIST as 28x28 images (64 bits, batch 256, Adam, the OrthoHash loss):
# images/s of `orthohash bench --backbone cnn` with 1 and 2 threads and 2 ranks x 1 thread, beside
# PyTorch (bench/pytorch_fmnist.py --backbone cnn, NCHW and channels_last) at 1 and 2 threads
# when torch is installed. ROUNDS (default 3) rounds alternate the programs, so that both sides
# meet the same machine; the table gives medians over the rounds and the ratios of the medians.
# STEPS (default 40) timed steps per run, after 5 warm-up steps.
#
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for orthohash's runs: some machines here set
# them (OPENBLAS_CORETYPE=Haswell) for old numpy builds, which would hold OpenBLAS to its AVX2
# kernel while PyTorch's oneDNN uses AVX-512. The kernel used is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
steps=${STEPS:-40}
swift build -c release 2>&1 | tail -1
bin=$PWD/.build/release/orthohash
have_torch=0
python3 -c "import torch" 2>/dev/null && have_torch=1
[ $have_torch = 1 ] || echo "torch is not installed: orthohash alone"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@"; }
# images/s from a bench table: the line of `ranks threads`.
rate() { awk -v r="$1" -v t="$2" '$1 == r && $2 == t { print $3 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for r in $(seq "$rounds"); do
  out=$(run "$bin" bench --backbone cnn --steps "$steps" --threads 1,2)
  [ "$r" = 1 ] && echo "$out" | head -1
  echo "$out" | rate 1 1 >> "$work/oh.1"
  echo "$out" | rate 1 2 >> "$work/oh.2"
  run mpirun -np 2 --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 "$bin" bench --backbone cnn --steps "$steps" --threads 1 \
    | rate 2 1 >> "$work/oh.r2"
  if [ $have_torch = 1 ]; then
    for t in 1 2; do
      python3 bench/pytorch_fmnist.py --backbone cnn --threads $t --bench-steps "$steps" \
        | python3 -c "import json,sys; print(json.load(sys.stdin)['samples_per_second'])" >> "$work/pt.$t"
      python3 bench/pytorch_fmnist.py --backbone cnn --channels-last --threads $t --bench-steps "$steps" \
        | python3 -c "import json,sys; print(json.load(sys.stdin)['samples_per_second'])" >> "$work/ptcl.$t"
    done
  fi
done
printf "%-22s %14s %16s %16s %12s %12s\n" config "orthohash im/s" "PyTorch NCHW" "channels_last" "vs NCHW" "vs ch_last"
for t in 1 2; do
  o=$(median < "$work/oh.$t")
  if [ $have_torch = 1 ]; then
    p=$(median < "$work/pt.$t"); c=$(median < "$work/ptcl.$t")
    printf "%-22s %14.0f %16.0f %16.0f %11.2fx %11.2fx\n" "$t thread(s)" "$o" "$p" "$c" "$(awk -v a="$o" -v b="$p" 'BEGIN { print a / b }')" "$(awk -v a="$o" -v b="$c" 'BEGIN { print a / b }')"
  else
    printf "%-22s %14.0f\n" "$t thread(s)" "$o"
  fi
done
printf "%-22s %14.0f\n" "2 ranks x 1 thread" "$(median < "$work/oh.r2")"
