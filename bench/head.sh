#!/usr/bin/env bash
# The 81,313-class head: ms/step of `orthohash bench` on the GLDv2 shape (2048-d float16
# descriptors, linear backbone, batch 256, 81,313 classes; 8,192 random rows) at each of BITS
# (default "64 128"), with 1 thread, 2 threads and 2 ranks x 1 thread, for the fused head (its
# products with the codebook by table lookups, the default where the CPU has AVX-512, and as BLAS
# GEMMs, --head-products blas) and the materialised one (--head logits), next to the step's GEMMs
# run alone at their full shapes
# (`bench --gemms`) and, when torch is installed, bench/pytorch_head.py (hand-written loss
# backward and plain autograd) at 1 and 2 threads. ROUNDS (default 3) rounds alternate the
# programs; the table gives medians over the rounds. STEPS (default 20) timed steps per run.
set -euo pipefail
cd "$(dirname "$0")/.."
bits_list=${BITS:-64 128}
rounds=${ROUNDS:-3}
steps=${STEPS:-20}
python3 -c "import numpy" 2>/dev/null || { echo "bench/head.sh: needs numpy (pip install numpy)" >&2; exit 1; }
source bench/common.sh
python3 - "$work" <<'EOF'
import sys, numpy as np
d = sys.argv[1]; r = np.random.default_rng(0)
x = r.standard_normal((8192, 2048)).astype(np.float16); y = r.integers(0, 81313, 8192).astype(np.int32); y[0] = 81312
np.save(f"{d}/x.npy", x); np.save(f"{d}/y.npy", y); np.save(f"{d}/qx.npy", x[:64]); np.save(f"{d}/qy.npy", y[:64])
EOF
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
data=(--dataset npy --train-features "$work/x.npy" --train-labels "$work/y.npy" --query-features "$work/qx.npy"
      --query-labels "$work/qy.npy" --db-features "$work/x.npy" --db-labels "$work/y.npy" --backbone linear)
# ms/step from a bench table: the line of `ranks threads`.
ms() { awk -v r="$1" -v t="$2" '$1 == r && $2 == t { print $4 }'; }
for bits in $bits_list; do
  for r in $(seq "$rounds"); do
    for head in fused fused-blas logits; do
      case $head in
        fused) flags=(--head fused --head-products lookup);;
        fused-blas) flags=(--head fused --head-products blas);;
        logits) flags=(--head logits);;
      esac
      out=$("$bin" bench "${data[@]}" --nbit "$bits" --steps "$steps" --threads 1,2 "${flags[@]}")
      echo "$out" | ms 1 1 >> "$work/$bits.$head.1"
      echo "$out" | ms 1 2 >> "$work/$bits.$head.2"
      mpirun -np 2 --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 "$bin" bench "${data[@]}" --nbit "$bits" \
        --steps "$steps" --threads 1 "${flags[@]}" | ms 2 1 >> "$work/$bits.$head.r2"
    done
    "$bin" bench "${data[@]}" --nbit "$bits" --steps 1 --threads 1,2 --gemms | awk '/GEMMs alone/ { print $2, $(NF-1) }' > "$work/g"
    awk '$1 == 1 { print $2 }' "$work/g" >> "$work/$bits.gemm.1"
    awk '$1 == 2 { print $2 }' "$work/g" >> "$work/$bits.gemm.2"
    if [ $have_torch = 1 ]; then
      for t in 1 2; do
        out=$(python3 bench/pytorch_head.py --threads $t --nbit "$bits" --steps "$steps")
        echo "$out" | awk '/ autograd:/ { print $4 }' >> "$work/$bits.torch-auto.$t"
        echo "$out" | awk '/ hand-written:/ { print $4 }' >> "$work/$bits.torch-hand.$t"
      done
    fi
  done
done
m() { if [ -s "$work/$1" ]; then median < "$work/$1"; else echo "-"; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.2fx", a / b }'; }
echo
echo "ms/step, medians of $rounds rounds ($steps steps each); fused: lookup products (blas: as GEMMs); 'GEMMs alone': the step's four GEMMs at their full shapes"
printf "%-5s %-13s %-8s %-11s %-8s %-11s %-10s %-14s %-13s %-18s %s\n" bits config fused fused-blas logits "GEMMs alone" "fused/GEMM" "torch (hand)" "torch (auto)" "torch(hand)/fused" "blas/fused"
for bits in $bits_list; do
  for c in 1 2 r2; do
    case $c in 1) name="1 thread";; 2) name="2 threads";; r2) name="2 ranks x 1";; esac
    f=$(m "$bits.fused.$c"); fb=$(m "$bits.fused-blas.$c"); l=$(m "$bits.logits.$c")
    g=-; th=-; ta=-
    [ "$c" != r2 ] && g=$(m "$bits.gemm.$c") && th=$(m "$bits.torch-hand.$c") && ta=$(m "$bits.torch-auto.$c")
    printf "%-5s %-13s %-8s %-11s %-8s %-11s %-10s %-14s %-13s %-18s %s\n" "$bits" "$name" "$f" "$fb" "$l" "$g" "$(ratio "$f" "$g")" "$th" "$ta" \
      "$(ratio "$th" "$f")" "$(ratio "$fb" "$f")"
  done
  f2=$(m "$bits.fused.2"); fr=$(m "$bits.fused.r2")
  echo "$bits bits: 2 threads / 2 ranks x 1 thread = $(ratio "$f2" "$fr")"
done
