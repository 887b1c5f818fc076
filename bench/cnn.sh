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
source bench/common.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@"; }
# images/s from a bench table: the line of `ranks threads`.
rate() { awk -v r="$1" -v t="$2" '$1 == r && $2 == t { print $3 }'; }
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
side_by_side_header
for t in 1 2; do side_by_side "$t thread(s)" "$work/oh.$t" "$work/pt.$t" "$work/ptcl.$t"; done
printf "%-22s %14.2f\n" "2 ranks x 1 thread" "$(median < "$work/oh.r2")"
