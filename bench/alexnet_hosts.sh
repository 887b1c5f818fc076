#!/usr/bin/env bash
# AlexNet data-parallel across hosts: 2 ranks of 1 thread on one host (the node's shared-memory
# window) against 2 namespace hosts x 1 rank over TCP (hostfiles/netns-hosts.sh, links shaped with
# tc tbf as deploy/scaling.sh shapes them) at each rate of LINKS Gb/s, with the gradient sums after
# the backward pass or overlapped with it, in float32 and bfloat16; batch 64 per rank on generated
# 224x224 images (`orthohash bench --backbone alexnet`).
#
# The namespace hosts' TCP runs on the same two cores that compute, so before measuring the script
# measures what moving a GB costs them (bench/tcp_cost.sh: unshaped, and at 10 Gb/s, which it
# uses for every shaped rate) and prints beside each result the bound that this cost and the
# link's rate set on the throughput relative to one host (docs/SCALING.md derives it):
#   G    bytes one rank must receive per step (the gradients; half with bf16 sums),
#   c    CPU seconds per GB moved (both ends), so c G / 1e9 per core per step (2 G cross the link),
#   T1   the 1-host step (overlap off), B1 its backward pass,
#   off: T1 + max(G / rate, c G / 1e9)            (the sum after the backward pass),
#   on:  max(T1 + c G / 1e9, T1 - B1 + G / rate)  (the sum hidden behind the backward pass at best).
#
# ROUNDS (default 2) alternate the configurations; STEPS (default 8) timed steps per run, after 5
# warm-up; LINKS (default "25 10 1"); BUCKETS (default 4) the --gradient-bucket-mb values tried
# with overlap; OUT (default runs/alexnet_hosts) gets the CSV. Root only. Takes ~6 minutes a round.
#
#   bash bench/alexnet_hosts.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-2}
steps=${STEPS:-8}
links=${LINKS:-25 10 1}
buckets=${BUCKETS:-4}
out=${OUT:-runs/alexnet_hosts}
[ "$(id -u)" -eq 0 ] || { echo "alexnet_hosts: namespace hosts need root" >&2; exit 1; }
swift build -c release 2>&1 | tail -1
bin=$PWD/.build/release/orthohash
mkdir -p "$out"
csv=$out/runs.csv
rm -f "$csv"
work=$(mktemp -d)

# What moving a GB costs the cores (ms, both ends): unshaped and at 10 Gb/s.
cost=$(bash bench/tcp_cost.sh)
echo "$cost"
c_none=$(echo "$cost" | awk '/^unshaped/ { print $(NF - 1) }')
c_shaped=$(echo "$cost" | awk '/^10 Gb\/s/ { print $(NF - 1) }')

# OpenBLAS's own kernel choice (bench/cnn.sh says why some machines here set these).
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
export NETNS_PREFIX=axh OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
hostfiles/netns-hosts.sh up 2
trap 'hostfiles/netns-hosts.sh down; rm -rf "$work"' EXIT
shape() { hostfiles/netns-hosts.sh shape "$1"; }
# One bench run: where ("local" or a link rate), then bench arguments.
run() {
  local where=$1; shift
  local common=(bench --backbone alexnet --batch-size 128 --steps "$steps" --threads 1 --csv "$csv" "$@")
  if [ "$where" = local ]; then
    mpirun -np 2 --bind-to none --mca mpi_yield_when_idle 1 -x OPENBLAS_NUM_THREADS "$bin" "${common[@]}" --label link=shm
  else
    shape "$where"
    ip netns exec axhh1 mpirun --host h1:1,h2:1 -np 2 --map-by slot \
      --mca plm_rsh_agent "$PWD/hostfiles/netns-launcher.sh" --mca plm_rsh_no_tree_spawn 1 \
      --mca oob_tcp_if_include 198.51.100.0/24 --mca btl self,vader,tcp --mca btl_tcp_if_include 198.51.100.0/24 \
      --mca btl_tcp_links 2 --bind-to none --mca mpi_yield_when_idle 1 -x OPENBLAS_NUM_THREADS -x NETNS_PREFIX \
      "$bin" "${common[@]}" --label link="$where"
  fi
}
configs=("local off float32 0")
for l in $links; do
  for sum in float32 bf16; do
    configs+=("$l off $sum 0")
    for b in $buckets; do configs+=("$l on $sum $b"); done
  done
done
for r in $(seq "$rounds"); do
  order=("${configs[@]}")
  if [ $(( r % 2 )) = 0 ]; then mapfile -t order < <(printf '%s\n' "${configs[@]}" | tac); fi
  for c in "${order[@]}"; do
    read -r where overlap sum mb <<< "$c"
    run "$where" --gradient-overlap "$overlap" --gradient-sum "$sum" --gradient-bucket-mb "$mb" \
      --label overlap_flag="$overlap" --label bucket_mb="$mb" --label round="$r" > "$work/last.txt" 2>&1 ||
      { cat "$work/last.txt" >&2; echo "alexnet_hosts: the run above failed ($c)" >&2; exit 1; }
    echo "round $r: $c: $(awk 'NR > 1 && $1 ~ /^[0-9]/ { print $3 " images/s"; exit }' "$work/last.txt")"
  done
done
shape none

python3 - "$csv" "$c_none" "$c_shaped" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
c_none, c_shaped = float(sys.argv[2]) / 1000, float(sys.argv[3]) / 1000   # CPU s per GB moved
def med(rs, k): return statistics.median(float(r[k]) for r in rs)
groups = {}
for r in rows: groups.setdefault((r["link"], r["overlap_flag"], r["gradient_precision"], r["bucket_mb"]), []).append(r)
base = groups[("shm", "off", "float32", "0")]
T1, B1, rate1 = med(base, "ms_step") / 1000, med(base, "backward_ms") / 1000, med(base, "samples_per_s")
G = float(base[0]["gradient_bytes"])
print(f"\n1 host x 2 ranks: {rate1:.1f} images/s, step {1000 * T1:.0f} ms (backward {1000 * B1:.0f}); gradients {G / 1e6:.0f} MB;"
      f" CPU per GB moved: {1000 * c_none:.0f} ms unshaped, {1000 * c_shaped:.0f} ms shaped")
print(f"{'link':>6} {'overlap':>7} {'sum':>7} {'bucket MB':>9} {'images/s':>9} {'vs 1 host':>9} {'bound':>6} {'target':>6}"
      f" {'compute ms':>10} {'sum ms':>7} {'bg sum ms':>9}")
for (link, overlap, precision, mb), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "shm", -float(kv[0][0]) if kv[0][0] != "shm" else 0, kv[0][1:])):
    rate = med(rs, "samples_per_s")
    bound = target = ""
    if link != "shm":
        g = G / 2 if precision == "bf16" else G
        cpu = (c_none if int(link) >= 25 else c_shaped) * g / 1e9
        wire = g / (float(link) * 1e9 / 8)
        step = T1 + max(wire, cpu) if overlap == "off" else max(T1 + cpu, T1 - B1 + wire)
        b = T1 / step
        bound = f"{b:.2f}"
        goal = 0.95 if (link == "10" and overlap == "on") else 0.8 if (link == "1" and overlap == "on" and precision == "bf16") else None
        if goal is not None: target = f"{min(goal, b - 0.03):.2f}"
    print(f"{link:>6} {overlap:>7} {precision:>7} {mb:>9} {rate:9.1f} {rate / rate1:9.2f} {bound:>6} {target:>6}"
          f" {med(rs, 'compute_ms'):10.0f} {med(rs, 'gradient_sum_ms'):7.0f} {med(rs, 'background_sum_ms'):9.0f}")
PY
