#!/usr/bin/env bash
# Data-parallel throughput on this machine: 2 ranks x 1 BLAS thread (mpirun, shared memory) against
# 1 rank x 2 threads, Fashion-MNIST MLP 784-1024-1024, 64 bits, global batch 256. They alternate
# for ROUNDS rounds, with a third run that sums gradients with MPI_Allreduce instead of the node's
# shared memory; medians, their ratio, and the time per step in the gradient all-reduce and in
# the BatchNorm/control-word reductions are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-100}
rounds=${ROUNDS:-3}
ranks=${RANKS:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
swift build -c release 2>&1 | tail -1
out=$(mktemp)
single() {
  .build/release/orthohash bench --steps "$steps" --threads "$ranks" | awk -v r="$1" '$1 == 1 { print "single", $3, $6, $7, r }' >> "$out"
}
shared() {
  mpirun -np "$ranks" --bind-to core .build/release/orthohash bench --steps "$steps" --threads 1 |
    awk -v n="$ranks" -v r="$1" '$1 == n { print "mpi", $3, $6, $7, r }' >> "$out"
}
plain() {
  ORTHOHASH_SHARED_MEMORY_REDUCE=0 mpirun -np "$ranks" --bind-to core -x ORTHOHASH_SHARED_MEMORY_REDUCE \
    .build/release/orthohash bench --steps "$steps" --threads 1 | awk -v n="$ranks" -v r="$1" '$1 == n { print "plain", $3, $6, $7, r }' >> "$out"
}
# The order is reversed every other round, so a machine speeding up or slowing down favours none.
for r in $(seq "$rounds"); do
  if [ $((r % 2)) = 1 ]; then single "$r"; shared "$r"; plain "$r"; else plain "$r"; shared "$r"; single "$r"; fi
done
python3 - "$out" "$ranks" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
n = sys.argv[2]
def med(who, col): return statistics.median(float(r[col]) for r in rows if r[0] == who)
s, m = med("single", 1), med("mpi", 1)
p = med("plain", 1)
print(f"median of {len(rows) // 3} rounds (samples/s)")
print(f"1 rank x {n} threads: {s:8.0f}")
print(f"{n} ranks x 1 thread: {m:8.0f}   all-reduce {med('mpi', 2):.2f} ms/step, BN-sync + control {med('mpi', 3):.2f} ms/step   (gradients through shared memory)")
print(f"{n} ranks x 1 thread: {p:8.0f}   all-reduce {med('plain', 2):.2f} ms/step, BN-sync + control {med('plain', 3):.2f} ms/step   (ORTHOHASH_SHARED_MEMORY_REDUCE=0: MPI_Allreduce)")
print(f"ratio ({n} ranks / 1 rank): {m / s:.2f}x; with MPI_Allreduce: {p / s:.2f}x")
# Ratios within each round, which the machine's drift between rounds does not move.
by = {(r[0], r[4]): float(r[1]) for r in rows}
def per_round(a, b):
    v = sorted(by[(a, k)] / by[(b, k)] for (w, k) in by if w == a and (b, k) in by)
    return f"{statistics.median(v):.2f}x ({v[0]:.2f}-{v[-1]:.2f})"
print(f"per-round ratios, median (min-max): shared memory / 1 rank {per_round('mpi', 'single')}, "
      f"MPI_Allreduce / 1 rank {per_round('plain', 'single')}, shared memory / MPI_Allreduce {per_round('mpi', 'plain')}")
PY
rm -f "$out"
