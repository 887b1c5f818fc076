#!/usr/bin/env bash
# Training throughput of orthohash beside the PyTorch reference on the same machine, side by side.
# Fashion-MNIST, MLP 784-1024-1024, 64 bits, batch 256. The two alternate for ROUNDS rounds; the
# medians are compared, and so are the ratios of each adjacent pair, because shared machines are
# noisy. PyTorch is optional (pip install "torch==2.13.0+cpu"); without it only orthohash's
# figures are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-100}
rounds=${ROUNDS:-3}
swift build -c release 2>&1 | tail -1
have_torch=0
python3 -c "import torch" 2>/dev/null && have_torch=1
out=$(mktemp)
run_orthohash() {
  .build/release/orthohash bench --steps "$steps" --threads "$1" | awk -v t="$1" -v r="$2" '$1 == 1 && $2 == t { print "orthohash", t, $3, $5, r }' >> "$out"
}
run_pytorch() {
  [ $have_torch = 1 ] || return 0
  python3 bench/pytorch_fmnist.py --threads "$1" --bench-steps "$steps" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("pytorch", d["threads"], d["samples_per_second"], "-", sys.argv[1])' "$2" >> "$out"
}
# Each round runs the two side by side for each thread count, the order swapped every round so
# that a machine slowing down or speeding up does not favour either.
for r in $(seq "$rounds"); do
  for t in 1 2; do
    if [ $((r % 2)) = 1 ]; then run_orthohash "$t" "$r"; run_pytorch "$t" "$r"; else run_pytorch "$t" "$r"; run_orthohash "$t" "$r"; fi
  done
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def get(who, t):
    return {r[4]: r for r in rows if r[0] == who and r[1] == str(t)}
print("median of %d rounds (samples/s, training loop only)" % len(get("orthohash", 1)))
print("threads  orthohash  gemm share  gemm-only bound  pytorch  ratio of medians  per-round ratios: median (min-max)")
for t in (1, 2):
    o, p = get("orthohash", t), get("pytorch", t)
    om = statistics.median(float(r[2]) for r in o.values())
    share = statistics.median(float(r[3].rstrip("%")) for r in o.values())
    # The GEMM-only bound: samples/s if everything but the GEMMs took no time.
    line = f"{t:7d}  {om:9.0f}  {share:9.1f}%  {om / (share / 100):15.0f}  "
    if p:
        pm = statistics.median(float(r[2]) for r in p.values())
        ratios = [float(o[k][2]) / float(p[k][2]) for k in o if k in p]
        line += f"{pm:7.0f}  {om / pm:15.2f}x  {statistics.median(ratios):5.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
    else:
        line += "      -                -  -"
    print(line)
PY
rm -f "$out"
