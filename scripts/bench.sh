#!/usr/bin/env bash
# Training throughput of orthohash beside the PyTorch reference on the same machine, side by side.
# Fashion-MNIST, MLP 784-1024-1024, 64 bits, batch 256. The two alternate for ROUNDS rounds and the
# medians are compared, because shared machines are noisy. PyTorch is optional
# (pip install "torch==2.13.0+cpu"); without it only orthohash's figures are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-100}
rounds=${ROUNDS:-3}
swift build -c release 2>&1 | tail -1
have_torch=0
python3 -c "import torch" 2>/dev/null && have_torch=1
out=$(mktemp)
for r in $(seq "$rounds"); do
  for t in 1 2; do
    .build/release/orthohash bench --steps "$steps" --threads "$t" | awk -v t="$t" '$1 == 1 && $2 == t { print "orthohash", t, $3, $5 }' >> "$out"
    if [ $have_torch = 1 ]; then
      python3 bench/pytorch_fmnist.py --threads "$t" --bench-steps "$steps" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("pytorch", d["threads"], d["samples_per_second"], "-")' >> "$out"
    fi
  done
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(who, t, col=2):
    v = [float(r[col]) for r in rows if r[0] == who and r[1] == str(t)]
    return statistics.median(v) if v else None
print("median of %d rounds (samples/s, training loop only)" % (len([r for r in rows if r[0] == "orthohash" and r[1] == "1"])))
print("threads  orthohash  gemm share  pytorch  ratio")
for t in (1, 2):
    o, p = med("orthohash", t), med("pytorch", t)
    share = statistics.median([float(r[3].rstrip("%")) for r in rows if r[0] == "orthohash" and r[1] == str(t)])
    print(f"{t:7d}  {o:9.0f}  {share:9.1f}%  " + (f"{p:7.0f}  {o / p:5.2f}x" if p else "      -      -"))
PY
rm -f "$out"
