#!/usr/bin/env bash
# Test "hosts" on one machine: network namespaces pnh1..pnhN joined by a bridge in namespace
# pnbr, addresses 198.51.100.i/24 (a documentation range) on interface mpi0. No route leaves
# them. Root only.   hostfiles/netns-hosts.sh up 3    |    hostfiles/netns-hosts.sh down
set -euo pipefail
action=${1:?up N | down}
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
  *) echo "usage: $0 up N | down" >&2; exit 2 ;;
esac
