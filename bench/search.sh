#!/usr/bin/env bash
# Exact Hamming search, orthohash beside faiss-cpu's IndexBinaryFlat on the same files: random
# packed codes, DB (default 1,000,000) database rows x Q (default 10,000) queries, k = K (default
# 100), at each of BITS (default "64 128") and THREADS (default "1 2"). Each configuration runs
# ROUNDS times (default 3) alternating the two programs; the table gives the medians of the
# in-process search times (files loaded before the clock starts, for both), their ratio, and
# whether every query's (distance, id) list is identical. KERNEL (default auto) picks orthohash's
# kernel (avx512, avx2, popcnt, portable: to see a slower CPU's figures on this one).
#
# Needs python3 with numpy to generate the codes; faiss only for its side of the table
# (pip install faiss-cpu; never a dependency of orthohash).
set -euo pipefail
cd "$(dirname "$0")/.."
db=${DB:-1000000}
queries=${Q:-10000}
k=${K:-100}
bits_list=${BITS:-64 128}
threads_list=${THREADS:-1 2}
rounds=${ROUNDS:-3}
kernel=${KERNEL:-auto}
python3 -c "import numpy" 2>/dev/null || { echo "bench/search.sh: needs numpy (pip install numpy)" >&2; exit 1; }
swift build -c release 2>&1 | tail -1
bin=.build/release/orthohash
have_faiss=0
python3 -c "import faiss" 2>/dev/null && have_faiss=1
[ $have_faiss = 1 ] || echo "faiss is not installed (pip install faiss-cpu): orthohash alone"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf "%-5s %-7s %-12s %-12s %-8s %s\n" bits threads orthohash faiss ratio identical
for bits in $bits_list; do
  python3 - "$work" "$bits" "$db" "$queries" <<'PY'
import sys, numpy as np
work, bits, M, Q = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = np.random.default_rng(bits)
np.save(f"{work}/db.npy", r.integers(0, 256, size=(M, bits // 8), dtype=np.uint8))
np.save(f"{work}/q.npy", r.integers(0, 256, size=(Q, bits // 8), dtype=np.uint8))
PY
  for t in $threads_list; do
    ours=() theirs=()
    for ((i = 0; i < rounds; i++)); do
      line=$(OPENBLAS_NUM_THREADS=1 "$bin" search --db "$work/db.npy" --queries "$work/q.npy" --k "$k" --threads "$t" \
        --kernel "$kernel" --out "$work/ids.npy" --distances "$work/d.npy" 2>&1)
      ours+=("$(sed -E 's/.*: ([0-9.]+) s .*/\1/' <<< "$line")")
      if [ $have_faiss = 1 ]; then
        theirs+=("$(python3 - "$work" "$k" "$t" <<'PY'
import sys, time, numpy as np, faiss
work, k, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
faiss.omp_set_num_threads(t)
db, q = np.load(f"{work}/db.npy"), np.load(f"{work}/q.npy")
index = faiss.IndexBinaryFlat(db.shape[1] * 8)
index.add(db)
start = time.perf_counter()
D, I = index.search(q, k)
print(f"{time.perf_counter() - start:.3f}")
np.save(f"{work}/faiss_ids.npy", I); np.save(f"{work}/faiss_d.npy", D)
PY
)")
      fi
    done
    median() { printf "%s\n" "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    mine=$(median "${ours[@]}")
    if [ $have_faiss = 1 ]; then
      other=$(median "${theirs[@]}")
      same=$(python3 - "$work" <<'PY'
import sys, numpy as np
w = sys.argv[1]
ours = (np.load(f"{w}/d.npy").astype(np.int64), np.load(f"{w}/ids.npy"))
theirs = (np.load(f"{w}/faiss_d.npy").astype(np.int64), np.load(f"{w}/faiss_ids.npy").astype(np.int64))
print("yes" if all(np.array_equal(a, b) for a, b in zip(ours, theirs)) else
      f"NO ({int((ours[1] != theirs[1]).any(axis=1).sum())} queries differ)")
PY
)
      ratio=$(awk -v a="$other" -v b="$mine" 'BEGIN {printf "%.2fx", a / b}')
      printf "%-5s %-7s %-12s %-12s %-8s %s\n" "$bits" "$t" "${mine} s" "${other} s" "$ratio" "$same"
    else
      printf "%-5s %-7s %-12s %-12s %-8s %s\n" "$bits" "$t" "${mine} s" - - -
    fi
  done
done
echo "(DB=$db x Q=$queries, k=$k, orthohash kernel: $kernel, medians of $rounds; ratio = faiss time / orthohash time)"
