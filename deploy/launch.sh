#!/usr/bin/env bash
# Launches `orthohash train` data-parallel with mpirun, choosing ranks, BLAS threads per rank and
# process binding from the cores per node.
#
#   deploy/launch.sh [--hostfile FILE] [--nodes N] [--ranks-per-node R] [--cores-per-node C] -- TRAIN ARGS...
#
# Defaults: this machine only; C = its cores; R = C (one single-threaded rank per core, which
# measured as fast as one rank using all cores here, see README); threads per rank = C / R.
# The global --batch-size must be divisible by N x R. Always safe to pass --resume: with no
# checkpoint in --run-dir the run starts from scratch. SIGTERM, SIGINT (Ctrl-C) or SIGUSR1 to
# this script stops the run after the current step with a checkpoint (exit status 75).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
hostfile="" nodes=1 rpn="" cores=""
fail() { echo "launch: $1" >&2; exit 2; }
# A value for $1, given as $2: present, and for the counts a positive integer.
value() { [ $# -ge 2 ] || fail "$1 needs a value"; }
count() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || fail "$1 must be a positive integer, got '$2'"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --hostfile) value "$@"; hostfile=$2; [ -r "$hostfile" ] || fail "--hostfile $hostfile: no such readable file"; shift 2 ;;
    --nodes) value "$@"; count "$1" "$2"; nodes=$2; shift 2 ;;
    --ranks-per-node) value "$@"; count "$1" "$2"; rpn=$2; shift 2 ;;
    --cores-per-node) value "$@"; count "$1" "$2"; cores=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
cores=${cores:-$(nproc)}
rpn=${rpn:-$cores}
threads=$(( cores / rpn ))
[ "$threads" -ge 1 ] || { echo "launch: --ranks-per-node $rpn exceeds the $cores cores per node" >&2; exit 2; }
np=$(( nodes * rpn ))
binary=${ORTHOHASH:-$here/.build/release/orthohash}
args=(-np "$np" --map-by "ppr:$rpn:node:PE=$threads" --bind-to core -x OPENBLAS_NUM_THREADS="$threads")
[ -n "$hostfile" ] && args+=(--hostfile "$hostfile")
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
# More ranks than cores on one machine (tests, laptops) need --oversubscribe.
[ "$nodes" -eq 1 ] && [ -z "$hostfile" ] && [ "$rpn" -gt "$(nproc)" ] && args+=(--oversubscribe)
echo "launch: $np rank(s) ($nodes node(s) x $rpn), $threads BLAS thread(s) each" >&2
# mpirun forwards SIGUSR1 to the ranks but answers SIGTERM and SIGINT by killing them a second
# later. So this script passes SIGTERM, SIGINT and SIGUSR1 on to mpirun as SIGUSR1: every rank
# stops after the same step, rank 0 writes a checkpoint of it, and the exit status is 75.
mpirun "${args[@]}" "$binary" train --threads "$threads" "$@" &
pid=$!
trap 'kill -USR1 "$pid" 2>/dev/null' TERM INT USR1
while :; do
  status=0
  wait "$pid" || status=$?
  kill -0 "$pid" 2>/dev/null || break      # wait returned for a trapped signal: mpirun still runs
done
exit "$status"
