#!/usr/bin/env bash
# Training throughput of orthohash and of the PyTorch reference, same machine, same run, side by side.
# Fashion-MNIST, MLP 784-1024-1024, 64 bits, batch 256. PyTorch is optional (pip install "torch==2.13.0+cpu").
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-100}
swift build -c release 2>&1 | tail -1
echo "== orthohash bench (threads = BLAS threads)"
.build/release/orthohash bench --steps "$steps" --threads 1,2 | tee /tmp/orthohash-bench.txt
if python3 -c "import torch" 2>/dev/null; then
  echo "== PyTorch $(python3 -c 'import torch; print(torch.__version__)') (bench/pytorch_fmnist.py)"
  for t in 1 2; do python3 bench/pytorch_fmnist.py --threads $t --bench-steps "$steps" | tee -a /tmp/pytorch-bench.txt; done
  python3 - <<'PY'
import json, re
ours = {}
for line in open("/tmp/orthohash-bench.txt"):
    m = re.match(r"\s*(\d+)\s+(\d+)\s", line)
    if m: ours[int(m.group(1))] = float(m.group(2))
theirs = [json.loads(l) for l in open("/tmp/pytorch-bench.txt")][-2:]
print("threads  orthohash  pytorch  ratio")
for t in theirs:
    n = t["threads"]
    print(f"{n:7d}  {ours[n]:9.0f}  {t['samples_per_second']:7.0f}  {ours[n] / t['samples_per_second']:5.2f}x")
PY
  rm -f /tmp/pytorch-bench.txt
else
  echo "(torch not installed: no PyTorch column)"
fi
