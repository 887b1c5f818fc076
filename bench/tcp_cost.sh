#!/usr/bin/env bash
# The CPU cost of moving bytes over TCP between two namespace hosts of this machine (veth through
# a bridge, as deploy/scaling.sh's hosts talk): one blocking stream of GB gigabytes (default 4) from
# host 1 to host 2, unshaped and shaped to 10 Gb/s with tc tbf, and the whole machine's user,
# system and irq+softirq time per GB moved (both ends together; the namespaces share one kernel).
# No MPI and no spinning: what any transport over these links costs the cores that also compute.
# Root only; needs python3 and iproute2.   bash bench/tcp_cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export NETNS_PREFIX=tcc
work=$(mktemp -d)
hostfiles/netns-hosts.sh up 2
trap 'hostfiles/netns-hosts.sh down; rm -rf "$work"' EXIT
GB=${GB:-4}
cat > "$work/rx.py" <<'PY'
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("198.51.100.2", 5001)); s.listen(1)
c, _ = s.accept(); v = memoryview(bytearray(1 << 20))
while c.recv_into(v): pass
PY
cat > "$work/tx.py" <<'PY'
import socket, sys, time
total = int(sys.argv[1]) << 30; s = socket.create_connection(("198.51.100.2", 5001)); b = bytes(1 << 20)
t = time.time(); sent = 0
while sent < total: s.sendall(b); sent += len(b)
s.close(); print(f"{sent / (time.time() - t) * 8 / 1e9:.2f} Gb/s")
PY
jiffies() { awk '/^cpu / { print $2 + $3, $4, $7 + $8 }' /proc/stat; }   # user+nice, system, irq+softirq
hz=$(getconf CLK_TCK)
for shape in none 10; do
  for i in 1 2; do ip netns exec tcch$i tc qdisc del dev mpi0 root 2>/dev/null || true; done
  if [ $shape = 10 ]; then
    for i in 1 2; do ip netns exec tcch$i tc qdisc add dev mpi0 root tbf rate 10gbit burst 1250000 latency 50ms; done
  fi
  ip netns exec tcch2 python3 "$work/rx.py" & rx=$!
  sleep 0.5
  a=$(jiffies); rate=$(ip netns exec tcch1 python3 "$work/tx.py" "$GB"); wait $rx; b=$(jiffies)
  python3 - "$a" "$b" "$GB" "$shape" "$rate" "$hz" <<'PY'
import sys
a = list(map(int, sys.argv[1].split())); b = list(map(int, sys.argv[2].split())); gb = float(sys.argv[3]); hz = float(sys.argv[6])
d = [(y - x) / hz * 1000 / gb for x, y in zip(a, b)]
link = "unshaped" if sys.argv[4] == "none" else sys.argv[4] + " Gb/s"
print(f"{link}: {sys.argv[5]}; CPU per GB moved: user {d[0]:.0f} ms, system {d[1]:.0f} ms, irq+softirq {d[2]:.0f} ms, total {sum(d):.0f} ms")
PY
done
