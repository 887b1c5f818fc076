#!/usr/bin/env bash
# Scaling experiment: strong and weak scaling of the training step over ranks, hosts and links,
# all-reduce sweeps for the model, time to a target mAP, then the report (CSV with efficiency,
# the fitted model's predictions to 256 nodes, PNG plots; deploy/scaling_report.py).
#
#   deploy/scaling.sh [--grid short|full] [--out DIR]
#
# Where the hosts come from:
# - this machine (default): 1 host, and as root 2 "hosts" made of network namespaces
#   (hostfiles/netns-hosts.sh) whose links are shaped with tc tbf to each rate of LINKS (Gb/s;
#   "none": unshaped veth). Every such host sees the same 2 cores: points with more ranks x
#   threads than the machine has cores are marked shares_cores=yes in the CSV and the plots.
# - a cluster: HOSTFILE=FILE (one host name per line; slots ignored) or inside a Slurm allocation
#   (SLURM_JOB_NODELIST), with CORES per node (default: this node's) and LINK naming the network
#   for the CSV. Ranks are placed by mpirun --host, one BLAS thread each, bound to cores.
#
# Workloads: fmnist (the MLP on Fashion-MNIST), gldv2head (the 81,313-class head on 2048-d
# rows), cnn (the cnn backbone on Fashion-MNIST's images) and alexnet (AlexNet on generated
# 224x224 images; strong scaling at a global batch of 128, weak at 64 images per rank, the others
# at 256 and 128 rows).
#
# Settings (environment): WORKLOADS ("fmnist gldv2head cnn alexnet"), MODES ("strong weak"), REPS
# (3 short, 5 full), STEPS (timed steps per run, after 5 warm-up; a third of them for gldv2head and
# cnn, a fifteenth after 2 warm-up for alexnet), LINKS ("none 25 10 1"), TARGET_MAP (the
# Fashion-MNIST MLP's mAP@all that time-to-target counts to; 0.78), TARGET_MAP_CNN (the cnn's;
# 0.80), TTT_EPOCHS (the epochs each trains; 3 short, 6 full), BIN (the orthohash binary;
# default: a release build of this checkout). The short grid takes about 35 minutes here, 25 of
# them AlexNet's.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
grid=short out=runs/scaling
while [ $# -gt 0 ]; do
  case "$1" in
    --grid|--out) [ $# -ge 2 ] || { echo "scaling: $1 needs a value" >&2; exit 2; }
      if [ "$1" = --grid ]; then grid=$2; else out=$2; fi; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "scaling: unknown argument '$1' (--grid short|full, --out DIR)" >&2; exit 2 ;;
  esac
done
case "$grid" in
  short) reps=${REPS:-3} steps=${STEPS:-60} ;;
  full) reps=${REPS:-5} steps=${STEPS:-150} ;;
  *) echo "scaling: --grid is short or full, got '$grid'" >&2; exit 2 ;;
esac
workloads=${WORKLOADS:-fmnist gldv2head cnn alexnet}
for w in $workloads; do
  case "$w" in fmnist|gldv2head|cnn|alexnet) ;; *) echo "scaling: WORKLOADS: unknown workload '$w' (fmnist, gldv2head, cnn, alexnet)" >&2; exit 2 ;; esac
done
modes=${MODES:-strong weak}
links=${LINKS:-none 25 10 1}
target=${TARGET_MAP:-0.78} target_cnn=${TARGET_MAP_CNN:-0.80}
# On a cluster the nodes may not allow installing: the CSVs are written anyway, and the report
# can run wherever matplotlib is (deploy/scaling_report.py DIR).
scripts/setup.sh --scaling || echo "scaling: setup failed; going on (the report needs Debian's python3-matplotlib)" >&2
if [ -z "${BIN:-}" ]; then
  swift build -c release 2>&1 | tail -1
  BIN=$root/.build/release/orthohash
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
runs="$out/runs.csv" sweeps="$out/allreduce.csv" ttt="$out/time_to_target.csv"
rm -f "$runs" "$sweeps" "$ttt" "$out/tcp_cost.csv"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
work=$(mktemp -d)
cores=${CORES:-$(nproc)}
netns=0
cleanup() {
  [ $netns = 1 ] && NETNS_PREFIX=osc hostfiles/netns-hosts.sh down
  rm -rf "$work"
}
trap cleanup EXIT

# The GLDv2 head's data: 2048-d float16 rows, 81,313 classes (what bench/head.sh uses).
if [[ " $workloads " == *" gldv2head "* ]]; then
  /usr/bin/python3 - "$work" <<'EOF'
import sys, numpy as np
d = sys.argv[1]; r = np.random.default_rng(0)
x = r.standard_normal((8192, 2048)).astype(np.float16); y = r.integers(0, 81313, 8192).astype(np.int32); y[0] = 81312
np.save(f"{d}/x.npy", x); np.save(f"{d}/y.npy", y); np.save(f"{d}/qx.npy", x[:64]); np.save(f"{d}/qy.npy", y[:64])
EOF
fi
workload_args() {
  case "$1" in
    fmnist) echo "--backbone mlp --hidden 1024,1024 --nbit 64" ;;
    gldv2head) echo "--dataset npy --train-features $work/x.npy --train-labels $work/y.npy --query-features $work/qx.npy --query-labels $work/qy.npy --db-features $work/x.npy --db-labels $work/y.npy --backbone linear --nbit 64" ;;
    cnn) echo "--backbone cnn --nbit 64" ;;
    alexnet) echo "--dataset generated --backbone alexnet --nbit 64" ;;
  esac
}
# Timed steps and warm-up steps per run: AlexNet's step is seconds, not milliseconds.
workload_steps() {
  case "$1" in
    gldv2head|cnn) echo $(( steps / 3 > 10 ? steps / 3 : 10 )) ;;
    alexnet) echo $(( steps / 15 > 4 ? steps / 15 : 4 )) ;;
    *) echo "$steps" ;;
  esac
}
workload_warmup() { if [ "$1" = alexnet ]; then echo 2; else echo 5; fi; }
# The global batch of strong scaling and the rows per rank of weak scaling.
strong_batch() { if [ "$1" = alexnet ]; then echo 128; else echo 256; fi; }
weak_rows() { if [ "$1" = alexnet ]; then echo 64; else echo 128; fi; }

# Hosts: "local" (this machine), "netns" (namespace hosts h1..hN), or a cluster's list.
hosts=()
mode_hosts=local
if [ -n "${HOSTFILE:-}" ]; then
  mapfile -t hosts < <(awk 'NF && $1 !~ /^#/ { print $1 }' "$HOSTFILE")
  mode_hosts=cluster
elif [ -n "${SLURM_JOB_NODELIST:-}" ]; then
  mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
  mode_hosts=cluster
elif [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null; then
  NETNS_PREFIX=osc hostfiles/netns-hosts.sh up 2
  netns=1
  hosts=(h1 h2)
  mode_hosts=netns
else
  echo "scaling: not root: one host only (namespace hosts need root)" >&2
fi
export NETNS_PREFIX=osc
# What moving a GB between the namespace hosts costs the cores that also compute (the model charges
# it to overlapped sums' compute): bench/tcp_cost.sh, unshaped ("none") and shaped ("shaped").
if [ "$mode_hosts" = netns ]; then
  cost=$(GB=2 bash bench/tcp_cost.sh) || { echo "scaling: bench/tcp_cost.sh failed" >&2; exit 1; }
  { echo "link,cpu_ms_per_gb"
    echo "$cost" | awk '/^unshaped/ { print "none," $(NF - 1) } /^10 Gb\/s/ { print "shaped," $(NF - 1) }'; } > "$out/tcp_cost.csv"
fi
# A cluster has one network, named by LINK; nothing is shaped.
[ "$mode_hosts" = cluster ] && links=${LINK:-cluster}
# On this machine, OpenBLAS's own kernel choice: some machines here set OPENBLAS_CORETYPE=Haswell
# for old numpy builds, which would hold it to AVX2 kernels (bench/cnn.sh). A cluster's are kept.
[ "$mode_hosts" = cluster ] || unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

# One bench run: nodes, ranks per node, link, then bench arguments. Appends to $2's CSV.
# mpirun options: local runs share memory; namespace hosts talk TCP over 198.51.100.0/24 and,
# as they share this machine's cores, need --bind-to none and yielding ranks (docs/SCALING.md says why).
launch() {
  local nodes=$1 rpn=$2 link=$3; shift 3
  local np=$(( nodes * rpn ))
  if [ "$nodes" -eq 1 ] && [ "$mode_hosts" != cluster ]; then
    if [ "$np" -eq 1 ]; then "$BIN" "$@"; return; fi
    mpirun -np "$np" --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -x OPENBLAS_NUM_THREADS "$BIN" "$@"
  elif [ "$mode_hosts" = netns ]; then
    local list=""
    for i in $(seq "$nodes"); do list+="${list:+,}h$i:$rpn"; done
    ip netns exec osch1 mpirun --host "$list" -np "$np" --map-by slot --oversubscribe \
      --mca plm_rsh_agent "$root/hostfiles/netns-launcher.sh" --mca plm_rsh_no_tree_spawn 1 \
      --mca oob_tcp_if_include 198.51.100.0/24 --mca btl self,vader,tcp --mca btl_tcp_if_include 198.51.100.0/24 \
      --mca btl_tcp_links 2 --bind-to none --mca mpi_yield_when_idle 1 -x OPENBLAS_NUM_THREADS -x NETNS_PREFIX "$BIN" "$@"
  else
    local list=""
    for h in "${hosts[@]:0:$nodes}"; do list+="${list:+,}$h:$rpn"; done
    # Each rank bound to as many cores as it has BLAS threads ($threads, set by the caller; 1 else).
    mpirun --host "$list" -np "$np" --map-by "ppr:$rpn:node:PE=${threads:-1}" --bind-to core -x OPENBLAS_NUM_THREADS "$BIN" "$@"
  fi
}

# Shapes every namespace host's link (both directions: each host's egress) to RATE Gb/s; any
# other link name (none, local, shm) unshapes them.
shape() {
  [ "$mode_hosts" = netns ] || return 0
  hostfiles/netns-hosts.sh shape "$1"
}

# Configurations: nodes x ranks per node x link. One host: 1, 2 (and 4 on the full grid) ranks;
# namespace hosts: 2 x 1 at each link, and 2 x 2 at the first shaped one; a cluster: powers of 2.
configs=("1 1 local" "1 2 shm")
[ "$grid" = full ] && configs+=("1 4 shm")
if [ "$mode_hosts" = netns ]; then
  for l in $links; do configs+=("2 1 $l"); done
  for l in $links; do [ "$l" != none ] && { configs+=("2 2 $l"); break; }; done
elif [ "$mode_hosts" = cluster ]; then
  configs=()
  n=1
  while [ "$n" -le "${#hosts[@]}" ]; do
    for rpn in 1 "$cores"; do configs+=("$n $rpn ${LINK:-cluster}"); done
    n=$(( n * 2 ))
  done
fi
shares() {  # yes when the run's ranks x threads exceed the cores of the machine they run on
  local nodes=$1 rpn=$2
  if [ "$mode_hosts" = netns ] && [ "$nodes" -gt 1 ]; then [ $(( nodes * rpn )) -gt "$cores" ] && echo yes || echo no
  else [ "$rpn" -gt "$cores" ] && echo yes || echo no; fi
}

started=$(date +%s)
echo "scaling: grid $grid, $reps repetitions, hosts: $mode_hosts, workloads: $workloads, modes: $modes"
total=$(( ${#configs[@]} * reps ))
k=0
for rep in $(seq "$reps"); do
  # Alternate the order every repetition, so that drift in the machine's speed favours no point.
  order=("${configs[@]}")
  if [ $(( rep % 2 )) = 0 ]; then mapfile -t order < <(printf '%s\n' "${configs[@]}" | tac); fi
  for c in "${order[@]}"; do
    read -r nodes rpn link <<< "$c"
    k=$(( k + 1 ))
    shape "$link"
    np=$(( nodes * rpn ))
    for w in $workloads; do
      for m in $modes; do
        # Strong: the global batch stays the same; weak: the same rows per rank.
        if [ "$m" = strong ]; then batch=$(strong_batch "$w"); else batch=$(( $(weak_rows "$w") * np )); fi
        # Across hosts, the MLP's and AlexNet's strong scaling also run with overlap and with
        # bfloat16 sums (AlexNet with both at once too), and one rank also with 2 BLAS threads (the
        # threads axis), for the comparisons in the summary (the plots use the default: 1 thread
        # per rank, no overlap, float32 sums).
        variants=(default)
        if [ "$nodes" -gt 1 ] && [ "$m" = strong ]; then
          [ "$w" = fmnist ] && variants+=(overlap bf16)
          [ "$w" = alexnet ] && variants+=(overlap bf16 overlap_bf16)
        fi
        [ "$np" -eq 1 ] && [ "$cores" -ge 2 ] && variants+=(2threads)
        for v in "${variants[@]}"; do
          threads=1
          case "$v" in
            default) extra=(--gradient-overlap off) ;;
            overlap) extra=(--gradient-overlap on) ;;
            bf16) extra=(--gradient-overlap off --gradient-sum bf16) ;;
            overlap_bf16) extra=(--gradient-overlap on --gradient-sum bf16) ;;
            2threads) extra=(--gradient-overlap off); threads=2 ;;
          esac
          # shellcheck disable=SC2046
          launch "$nodes" "$rpn" "$link" bench $(workload_args "$w") --batch-size "$batch" --steps "$(workload_steps "$w")" \
            --warmup "$(workload_warmup "$w")" --threads "$threads" "${extra[@]}" --csv "$runs" --label workload="$w" --label mode="$m" --label link="$link" --label rep="$rep" \
            --label variant="$v" --label shares_cores="$(shares "$nodes" "$rpn")" --label hosts="$mode_hosts" > "$work/last.txt" 2>&1 ||
            { cat "$work/last.txt" >&2; echo "scaling: the run above failed ($nodes x $rpn, $link, $w, $m, $v)" >&2; exit 1; }
        done
      done
    done
    threads=1
    echo "scaling: [$k/$total] $nodes node(s) x $rpn rank(s), link $link, repetition $rep ($(( $(date +%s) - started )) s)"
  done
done
shape none

# The compute model: one rank, one thread, at several batches.
for w in $workloads; do
  batches="32 64 128 256 512"
  [ "$w" = alexnet ] && batches="16 32 64 128"
  for b in $batches; do
    # shellcheck disable=SC2046
    "$BIN" bench $(workload_args "$w") --batch-size "$b" --steps "$(workload_steps "$w")" --warmup "$(workload_warmup "$w")" \
      --threads 1 --csv "$out/compute.csv" --label workload="$w" >/dev/null
  done
done
echo "scaling: compute sweep done ($(( $(date +%s) - started )) s)"

# All-reduce sweeps: shared memory on one host, TCP between namespace hosts at each link.
sweep_max=$(( 256 << 20 ))   # past AlexNet's 229 MB
launch 1 2 shm bench --allreduce --allreduce-max "$sweep_max" --csv "$sweeps" --label link=shm >/dev/null
if [ "$mode_hosts" = netns ] || [ "${#hosts[@]}" -ge 2 ]; then
  for l in $links; do
    shape "$l"
    launch 2 1 "$l" bench --allreduce --allreduce-max "$sweep_max" --csv "$sweeps" --label link="$l" >/dev/null
  done
  shape none
fi
echo "scaling: all-reduce sweeps done ($(( $(date +%s) - started )) s)"

# Time to a target mAP (strong scaling: the same global batch, so the same steps): the Fashion-MNIST
# MLP and the cnn trained with an evaluation after every epoch, the training seconds at the first
# epoch at or above the target (evaluations excluded). The cnn at 1 and 2 ranks on one host, the
# MLP across 2 hosts too.
epochs=${TTT_EPOCHS:-$([ "$grid" = full ] && echo 6 || echo 3)}
for w in fmnist cnn; do
  [[ " $workloads " == *" $w "* ]] || continue
  ttt_configs=("1 1 local" "1 2 shm")
  if [ "$w" = fmnist ]; then
    [ "$mode_hosts" = netns ] && ttt_configs+=("2 1 ${TTT_LINK:-10}")
    [ "$mode_hosts" = cluster ] && [ "${#hosts[@]}" -ge 2 ] && ttt_configs+=("2 1 $links")
    model=(--backbone mlp --hidden 1024,1024) goal=$target
  else
    model=(--backbone cnn) goal=$target_cnn
  fi
  for c in "${ttt_configs[@]}"; do
    read -r nodes rpn link <<< "$c"
    shape "$link"
    rm -rf "$work/ttt"
    launch "$nodes" "$rpn" "$link" train "${model[@]}" --nbit 64 --epochs "$epochs" --eval-every 1 \
      --map-at all --threads 1 --run-dir "$work/ttt" --quiet > "$work/last.txt" 2>&1 || { cat "$work/last.txt" >&2; exit 1; }
    /usr/bin/python3 - "$work/ttt/metrics.jsonl" "$ttt" "$w" "$nodes" "$rpn" "$link" "$goal" "$(shares "$nodes" "$rpn")" <<'EOF'
import json, os, sys
metrics, path, workload, nodes, rpn, link, target, shares = sys.argv[1:]
lines = [json.loads(l) for l in open(metrics)]
hit = next((l for l in lines if l["map"]["all"] >= float(target)), None)
new = not os.path.exists(path)
with open(path, "a") as f:
    if new: f.write("workload,nodes,ranks,link,shares_cores,target_map,epochs_to_target,seconds_to_target,final_map,samples_per_s\n")
    last = lines[-1]
    f.write(f"{workload},{nodes},{int(nodes) * int(rpn)},{link},{shares},{target},{hit['epoch'] if hit else ''},"
            f"{hit['train_seconds'] if hit else ''},{last['map']['all']:.4f},{last['samples_per_second']:.1f}\n")
EOF
  done
done
shape none
echo "scaling: time to target done ($(( $(date +%s) - started )) s)"

if ! /usr/bin/python3 -c "import matplotlib, numpy" 2>/dev/null; then
  echo "scaling: no matplotlib for /usr/bin/python3 here: the CSVs are in $out; run deploy/scaling_report.py $out where it is" >&2
  exit 0
fi
/usr/bin/python3 deploy/scaling_report.py "$out"
echo "scaling: $(( $(date +%s) - started )) s in all; results in $out"
