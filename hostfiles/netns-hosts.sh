#!/usr/bin/env bash
# Test "hosts" on one machine: network namespaces pnh1..pnhN joined by a bridge in namespace
# pnbr, addresses 198.51.100.i/24 (a documentation range) on interface mpi0. No route leaves
# them. Root only.   hostfiles/netns-hosts.sh up 3    |    hostfiles/netns-hosts.sh down
# `shape RATE` shapes every host's link (each host's egress: both directions) to RATE Gb/s with tc
# tbf; any other RATE (none, local, shm) unshapes them.
set -euo pipefail
action=${1:?up N | shape RATE | down}
prefix=${NETNS_PREFIX:-pn}
down() {
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${prefix}(h[0-9]+|br)$" || true); do ip netns del "$ns" 2>/dev/null || true; done
}
case "$action" in
  down) down ;;
  up)
    n=${2:?number of hosts}
    down
    ip netns add "${prefix}br"
    ip -n "${prefix}br" link add br0 type bridge
    ip -n "${prefix}br" link set br0 up
    ip -n "${prefix}br" link set lo up
    for i in $(seq "$n"); do
      ns="${prefix}h$i"
      ip netns add "$ns"
      ip -n "${prefix}br" link add "v$i" type veth peer name mpi0 netns "$ns"
      ip -n "${prefix}br" link set "v$i" master br0 up
      ip -n "$ns" addr add "198.51.100.$i/24" dev mpi0
      ip -n "$ns" link set mpi0 up
      ip -n "$ns" link set lo up
    done
    ;;
  shape)
    rate=${2:?rate in Gb/s, or none}
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^${prefix}h[0-9]+$" || true); do
      ip netns exec "$ns" tc qdisc del dev mpi0 root 2>/dev/null || true
      if [[ "$rate" =~ ^[0-9]+$ ]]; then
        # A burst of 1 ms at the rate (at least 256 KB): the rate holds for long transfers.
        burst=$(( rate * 125000 > 262144 ? rate * 125000 : 262144 ))
        ip netns exec "$ns" tc qdisc add dev mpi0 root tbf rate "${rate}gbit" burst "$burst" latency 50ms
      fi
    done
    ;;
  *) echo "usage: $0 up N | shape RATE | down" >&2; exit 2 ;;
esac
