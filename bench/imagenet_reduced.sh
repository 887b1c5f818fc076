#!/usr/bin/env bash
# The paper's ImageNet100 protocol reduced to this machine, on GENERATED data (not ImageNet):
# bench/make_images.py writes JPEGs of CLASSES classes (300-500 x 250-400 pixels) and the authors'
# list files; AlexNet trains end to end from the images with the protocol's settings (64 bits,
# Adam at lr 1e-4 with the backbone at 0.1x, the step decay at 80% of the epochs, mAP@1000
# evaluated every EVAL_EVERY epochs, the best kept) on 2 ranks (deploy/launch.sh, one thread each),
# is stopped with SIGTERM after STOP_EPOCH epochs and resumed with --resume; then the best model
# encodes the query and database lists through the test transform, `search` ranks the database
# for each query by Hamming distance, and `map` scores the codes (mAP@1000 and mAP@all). Without
# internet there are no torchvision weights here, so AlexNet starts from its random
# initialisation (--pretrained FILE.safetensors where they are: docs/IMAGENET100.md).
#
# CLASSES (10), TRAIN (1280), QUERY (200), DB (1280), EPOCHS (10), STOP_EPOCH (4), EVAL_EVERY (5),
# OUT (runs/imagenet_reduced). Needs Pillow and numpy for the writer. About 5 minutes here.
#
#   bash bench/imagenet_reduced.sh
set -euo pipefail
cd "$(dirname "$0")/.."
classes=${CLASSES:-10} train=${TRAIN:-1280} query=${QUERY:-200} db=${DB:-1280}
epochs=${EPOCHS:-10} stop_epoch=${STOP_EPOCH:-4} eval_every=${EVAL_EVERY:-5}
out=${OUT:-runs/imagenet_reduced}
swift build -c release 2>&1 | tail -1
bin=$PWD/.build/release/orthohash
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rm -rf "$out"
mkdir -p "$out"
data=$out/data run=$out/run
started=$(date +%s)
python3 bench/make_images.py --out "$data" --classes "$classes" --train "$train" --query "$query" --db "$db"
echo "imagenet_reduced: $train + $query + $db generated JPEGs of $classes classes in $data ($(( $(date +%s) - started )) s)"

step_at=$(( (epochs * 8 + 9) / 10 ))
args=(--dataset images --image-root "$data" --train-list "$data/train.txt" --query-list "$data/query.txt" --db-list "$data/db.txt"
      --backbone alexnet --nbit 64 --batch-size 64 --epochs "$epochs" --lr 1e-4 --backbone-lr-scale 0.1
      --scheduler step --step-size "$step_at" --eval-every "$eval_every" --map-at 1000,all --run-dir "$run")
# Stopped with SIGTERM once the checkpoint of epoch STOP_EPOCH is written; launch.sh passes it on.
deploy/launch.sh --ranks-per-node 2 -- "${args[@]}" > "$out/first.log" 2>&1 &
job=$!
until grep -q "\"epoch\" *: *$stop_epoch\b" "$run/metrics.jsonl" 2>/dev/null || ! kill -0 $job 2>/dev/null; do sleep 1; done
kill -TERM $job 2>/dev/null || true
status=0
wait $job || status=$?
tail -2 "$out/first.log"
[ $status = 75 ] || { echo "imagenet_reduced: the first run ended with status $status, not 75 (stopped with a checkpoint)" >&2; exit 1; }
echo "imagenet_reduced: stopped by SIGTERM ($(( $(date +%s) - started )) s); resuming"
deploy/launch.sh --ranks-per-node 2 -- --run-dir "$run" --resume > "$out/resumed.log" 2>&1
tail -3 "$out/resumed.log"

# The best model: codes of the query and database images, the database ranked for each query,
# and the figures from the codes and the lists' labels.
for split in query db; do
  "$bin" encode --run-dir "$run" --images "$data/$split.txt" --image-root "$data" --out "$out/${split}_codes.npy"
  python3 - "$data/$split.txt" "$out/${split}_labels.npy" <<'PY'
import sys, numpy as np
np.save(sys.argv[2], np.array([int(l.split()[1]) for l in open(sys.argv[1]) if l.strip()], dtype=np.int64))
PY
done
"$bin" search --db "$out/db_codes.npy" --queries "$out/query_codes.npy" --k 100 --out "$out/top100.npy"
"$bin" map --queries "$out/query_codes.npy" --db "$out/db_codes.npy" --query-labels "$out/query_labels.npy" \
  --db-labels "$out/db_labels.npy" --map-at 1000,all --precision-at 100 --out "$out/figures.json" > "$out/map.json"
python3 - "$out" <<'PY'
import json, sys, numpy as np
out = sys.argv[1]
f = json.load(open(f"{out}/figures.json"))
print(f"map: mAP@1000 {f['mAP@1000']:.4f}, mAP@all {f['mAP@all']:.4f}, P@100 {f['P@100']:.4f} ({f['queries']} queries, {f['database']} codes; all figures in {out}/figures.json)")
top = np.load(f"{out}/top100.npy"); q = np.load(f"{out}/query_labels.npy"); d = np.load(f"{out}/db_labels.npy")
print(f"search: top-100 precision {np.mean(d[top] == q[:, None]):.4f} over {len(q)} queries (from search's ids)")
PY
echo "imagenet_reduced: $(( $(date +%s) - started )) s in all; results in $out"
