#!/usr/bin/env bash
# Retrieval quality on full Fashion-MNIST for several seeds, orthohash beside the PyTorch
# reference (bench/pytorch_fmnist.py, when torch is installed): MLP 784-1024-1024 (BACKBONE=mlp,
# the default) or the cnn over the 28x28 images (BACKBONE=cnn), other settings at their defaults. SEEDS (default "0 1 2"), EPOCHS (default 10), NBIT (default 64) and THREADS
# (default: the cores) may be set; extra arguments go to `orthohash train`. For the same seed both
# programs train with the same codebook (the authors' draw right after torch.manual_seed), which
# the table confirms per seed; initial weights and batch order still differ.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-0 1 2}
epochs=${EPOCHS:-10}
nbit=${NBIT:-64}
threads=${THREADS:-$(nproc)}
backbone=${BACKBONE:-mlp}
case $backbone in
  mlp) model=(--backbone mlp --hidden 1024,1024);;
  cnn) model=(--backbone cnn);;
  *) echo "quality.sh: BACKBONE is mlp or cnn, not '$backbone'" >&2; exit 1;;
esac
swift build -c release 2>&1 | tail -1
have_torch=0
python3 -c "import torch" 2>/dev/null && have_torch=1
out=$(mktemp)
runs=$(mktemp -d)
for s in $seeds; do
  if [ $have_torch = 1 ]; then
    python3 bench/pytorch_fmnist.py --backbone "$backbone" --threads "$threads" --epochs "$epochs" --nbit "$nbit" --seed "$s" --save-codebook "$runs/cb$s.npy" |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print("pytorch", sys.argv[1], d["map_all"], d["map_1000"], "-")' "$s" >> "$out"
  fi
  .build/release/orthohash train "${model[@]}" --nbit "$nbit" --epochs "$epochs" --seed "$s" \
    --threads "$threads" --quiet --run-dir "$runs/seed$s" "$@"
  python3 - "$runs/seed$s" "$s" "$runs/cb$s.npy" >> "$out" <<'PY'
import json, os, sys
run, seed, torch_codebook = sys.argv[1:]
d = json.load(open(run + "/summary.json"))
same = "-"
if os.path.exists(torch_codebook):  # only with torch, which brings numpy
    import numpy as np
    same = "yes" if np.array_equal(np.load(run + "/codebook.npy").astype(np.int8), np.load(torch_codebook)) else "NO"
print("orthohash", seed, d["map"]["all"], d["map"]["1000"], same)
PY
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("program    seed  mAP@all  mAP@1000  codebook identical to PyTorch's")
for r in rows:
    print(f"{r[0]:9s}  {r[1]:>4s}  {float(r[2]):7.4f}  {float(r[3]):8.4f}  {r[4]}")
for who in ("orthohash", "pytorch"):
    v = [r for r in rows if r[0] == who]
    if v:
        print(f"{who:9s}  mean  {statistics.mean(float(r[2]) for r in v):7.4f}  {statistics.mean(float(r[3]) for r in v):8.4f}")
o = {r[1]: r for r in rows if r[0] == "orthohash"}
p = {r[1]: r for r in rows if r[0] == "pytorch"}
common = [k for k in o if k in p]
if common:
    d = [float(o[k][2]) - float(p[k][2]) for k in common]
    print(f"orthohash - pytorch, mAP@all per seed: " + " ".join(f"{x:+.4f}" for x in d) + f"  (mean {statistics.mean(d):+.4f})")
PY
rm -rf "$out" "$runs"
