#!/usr/bin/python3
"""The scaling experiment's report: efficiency per run, the fitted model, its predictions to 256
nodes, and the plots.  deploy/scaling.sh runs it; run it again on a results directory:

    /usr/bin/python3 deploy/scaling_report.py runs/scaling

Reads (from deploy/scaling.sh): runs.csv (one row per bench run), compute.csv (one rank at several
batches), allreduce.csv (the sweeps), time_to_target.csv. Writes: scaling.csv (runs.csv with
`efficiency` against the one-rank figure of the same workload and mode, and `model_ms`, the model's
step time for that point), model.json, predictions.csv, summary.md and PNG plots.

The model (docs/SCALING.md):
- all-reduce of n bytes: alpha + beta n per path, fitted to the sweeps (least squares on relative
  error); across p nodes the cheapest of ring, recursive doubling and Rabenseifner's algorithm
  (Thakur, Rabenseifner and Gropp 2005); with L ranks per node the node's shared-memory sum first,
  then the L shards cross the network at once, sharing the node's link;
- compute: step time less communication against the rank's batch, t(b) = c0 + c1 b, and the
  backward pass alone likewise (for overlap);
- a step: compute + the small sums (BatchNorm, control word) + the gradient sum, which with
  overlap runs bucket by bucket (hash layer first) behind the backward pass.
Matplotlib (Debian's python3-matplotlib, with numpy) because the fit needs numpy anyway and one
script then turns the CSVs into every plot.
"""
import csv
import json
import math
import os
import statistics
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else "runs/scaling"


def read(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


runs, compute, sweeps, ttt = read("runs.csv"), read("compute.csv"), read("allreduce.csv"), read("time_to_target.csv")
# CPU seconds per byte moved between the namespace hosts (bench/tcp_cost.sh, both ends), unshaped
# and shaped; none measured (a cluster): 0.
tcp_costs = {r["link"]: float(r["cpu_ms_per_gb"]) / 1e12 for r in read("tcp_cost.csv")}


def tcp_cpu(link):
    if link in ("local", "shm"):
        return 0.0
    return tcp_costs.get("none" if link == "none" or (link.isdigit() and int(link) >= 25) else "shaped", 0.0)
if not runs:
    sys.exit(f"scaling_report: {out}/runs.csv: no runs (run deploy/scaling.sh first)")
num = ["nodes", "ranks", "threads", "global_batch", "rank_batch", "samples_per_s", "ms_step", "ms_step_p50", "ms_step_p95",
       "compute_ms", "gradient_sum_ms", "bn_sync_ms", "bn_sync_calls", "wait_ms", "forward_ms", "backward_ms", "update_ms",
       "data_ms", "gradient_bytes", "background_sum_ms"]
for r in runs + compute:
    for k in num:
        if k in r:
            r[k] = float(r[k])
for r in sweeps:
    r["bytes"], r["seconds"], r["nodes"] = float(r["bytes"]), float(r["seconds"]), int(r["nodes"])
CORES = os.cpu_count() or 2

# Each workload's layers in forward order: (parameters, forward FLOPs per row), the hash layer
# last (its weight, and BatchNorm's scale and shift), as orthohash builds them (Backbone.swift).
def layer_table(workload):
    if workload == "fmnist":
        dims = [(784, 1024), (1024, 1024), (1024, 64)]
        return [(i * o + 3 * o, 2 * i * o) for i, o in dims]
    if workload == "gldv2head":
        return [(2048 * 64 + 3 * 64, 2 * 2048 * 64)]
    conv = lambda c, o, k, positions: (o * c * k * k + o, 2 * o * c * k * k * positions)
    fc = lambda i, o: (i * o + o, 2 * i * o)
    hash_ = lambda f: (f * 64 + 2 * 64, 2 * f * 64)
    if workload == "cnn":
        return [conv(1, 32, 5, 28 * 28), conv(32, 64, 5, 14 * 14), fc(3136, 1024), hash_(1024)]
    if workload == "alexnet":
        return [conv(3, 64, 11, 55 * 55), conv(64, 192, 5, 27 * 27), conv(192, 384, 3, 13 * 13), conv(384, 256, 3, 13 * 13),
                conv(256, 256, 3, 13 * 13), fc(9216, 4096), fc(4096, 4096), hash_(4096)]
    return None


BUCKET_BYTES = 4 << 20    # --gradient-bucket-mb's default


def buckets(workload):
    """The gradient buckets in the order the backward pass completes them (hash layer first),
    each with the share of the backward pass's FLOPs done when it is ready: layers merged until a
    bucket holds BUCKET_BYTES, larger ones split into near-equal pieces, the first layer closing
    the last bucket (GradientBuckets in Sources/OrthoHashMPI/GradientSumPlan.swift)."""
    layers = layer_table(workload)
    # The loss over 81,313 classes comes first in the gldv2head's backward pass.
    head = 2 * 64 * 81313 if workload == "gldv2head" else 0
    order = list(reversed(layers))
    # dW, and dX except for the first layer.
    flops = [f * (1 if k == len(order) - 1 else 2) / 2 for k, (_, f) in enumerate(order)]
    total, done, out_, pending = head + sum(flops), head, [], 0
    for k, ((params, _), f) in enumerate(zip(order, flops)):
        done += f
        pending += 4 * params
        if pending >= BUCKET_BYTES or k == len(order) - 1:
            pieces = max(1, math.ceil(pending / BUCKET_BYTES))
            out_ += [(pending / pieces, done / total)] * pieces
            pending = 0
    return out_


# ---- all-reduce fits -------------------------------------------------------------------------
def fit(points):
    """alpha + beta n through (n, t), least squares on relative error."""
    n = np.array([p[0] for p in points]); t = np.array([p[1] for p in points])
    a = np.stack([1 / t, n / t], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    return max(alpha, 1e-7), max(beta, 1e-13)


def fit_tcp(points):
    """alpha from the fit above (the small sums weigh most), beta from the sums of 256 KB and
    more (the median of (t - alpha) / n): a relative fit over 4 B to 4 MB would let the many
    latency-bound sizes tilt the bandwidth."""
    alpha, beta = fit(points)
    large_ = [(t - alpha) / n for n, t in points if n >= 256 << 10]
    return alpha, (statistics.median(large_) if large_ else beta)


# Over TCP, Open MPI sends messages up to its eager limit (the shim's 4 MB + 64 KB) at once and
# larger ones after a rendezvous, whose handshake can queue behind the other direction's data.
# A 2-rank all-reduce's messages are half its buffer, so sums up to 8 MB go without one (the
# sweep: 4 MB at a 1 Gb/s link's rate, 16 MB at half of it). The two sizes get fits of their own
# (the larger where the sweep reached beyond).
EAGER_BYTES = 8 << 20
points = {}
for r in sweeps:
    points.setdefault((r["link"], r["path"]), []).append((r["bytes"], r["seconds"]))
fits = {k: fit(v) if k[0] == "shm" else fit_tcp([p for p in v if p[0] <= EAGER_BYTES] or v) for k, v in points.items()}
large = {k[0]: fit([p for p in v if p[0] > EAGER_BYTES]) for k, v in points.items()
         if k[0] != "shm" and k[1] == "mpi" and sum(p[0] > EAGER_BYTES for p in v) >= 2}
node_path = fits.get(("shm", "shared"), (5e-6, 5e-11))
node_mpi = fits.get(("shm", "mpi"), (2e-6, 3e-10))
tcp_links = {k[0]: v for k, v in fits.items() if k[0] not in ("shm",) and k[1] == "mpi"}
software = tcp_links.get("none", (25e-6, 5e-10))
# The wire's efficiency: at each shaped link whose rate the hosts could carry twice over unshaped
# (so the wire, not the cores moving the bytes, is the bound), the rate's time per byte over the
# fitted one. Faster shaped links here reach only the unshaped veth's own ceiling.
ceiling = 8 / software[1] if "none" in tcp_links else float("inf")
eta = [8 / (float(l) * 1e9) / b for l, (a, b) in tcp_links.items() if l.isdigit() and 2 * float(l) * 1e9 <= ceiling]
eta_wire = statistics.median(eta) if eta else 0.9


def link_params(link, measured=True, n=0):
    """alpha, beta of one link for a sum of n bytes: as measured where it was (the points
    measured here; beyond the eager limit the large sums' own fit), else the unshaped TCP
    latency and the rate at the measured wire efficiency. Predictions use the latter at every
    rate: the namespace hosts' unshaped veth tops out where this machine's two cores do (about
    10 Gb/s), which says nothing of a real NIC's."""
    if measured and link in tcp_links:
        return large[link] if n > EAGER_BYTES and link in large else tcp_links[link]
    if link in ("shm", "local"):
        return node_mpi
    return software[0], 8 / (float(link) * 1e9 * eta_wire)


def allreduce(n, p, alpha, beta):
    """Thakur-Rabenseifner-Gropp: the cheapest of ring, recursive doubling, Rabenseifner."""
    if p <= 1:
        return 0.0
    lg = math.ceil(math.log2(p))
    ring = 2 * (p - 1) * alpha + 2 * (p - 1) / p * n * beta
    doubling = lg * (alpha + n * beta)
    rabenseifner = 2 * lg * alpha + 2 * (p - 1) / p * n * beta
    return min(ring, doubling, rabenseifner)


def gradient_sum(n, nodes, per_node, link, measured=True, bf16=False):
    """The gradients' path: the node's shared window, then each of its L shards across the nodes
    at once (L streams share the node's link: L x beta per stream), in half the bytes with bf16."""
    t = 0.0
    if per_node > 1:
        t += node_path[0] + node_path[1] * n
    if nodes > 1:
        m = n / per_node * (0.5 if bf16 else 1)
        a, b = link_params(link, measured, m)
        t += allreduce(m, nodes, a, b * per_node)
    return t


def small_sum(nodes, per_node, link, measured=True):
    """One all-reduce of a few numbers over every rank (MPI_Allreduce: log2 L rounds in the
    node, log2 P across)."""
    t = math.ceil(math.log2(per_node)) * node_mpi[0] if per_node > 1 else 0.0
    if nodes > 1:
        t += math.ceil(math.log2(nodes)) * link_params(link, measured)[0]
    return t


# ---- compute fits ----------------------------------------------------------------------------
def linear(xs, ys):
    c1, c0 = np.polyfit(np.array(xs), np.array(ys), 1)
    return float(c0), float(c1)


models = {}
for w in sorted({r["workload"] for r in compute}):
    rows = [r for r in compute if r["workload"] == w]
    xs = [r["rank_batch"] for r in rows]
    models[w] = {"compute": linear(xs, [r["compute_ms"] / 1e3 for r in rows]),
                 "backward": linear(xs, [r["backward_ms"] / 1e3 for r in rows]),
                 "bytes": rows[0]["gradient_bytes"], "bn_calls": None}
for w in models:
    calls = [r["bn_sync_calls"] for r in runs if r["workload"] == w and r["ranks"] > 1]
    models[w]["bn_calls"] = statistics.median(calls) if calls else 9.0


def step_time(w, batch, nodes, per_node, link, overlap=False, measured=False, share=1.0, bf16=False, speed=1.0, steal=0.0):
    """Seconds per step: compute (slowed by `share` where ranks outnumber cores, sped up by
    `speed` for ranks of several threads: threads x their efficiency), the small sums (BatchNorm's,
    the control word, and for `measured` points the barrier bench runs put before the gradient
    sum), and the gradient sum (the gather of updated shards is inside the shared path's fit),
    behind the backward pass with overlap. `measured`: a point measured here, with its link's own
    fit. `steal`: CPU seconds per byte a rank sends across the network that its own compute loses
    when the sums overlap it (here, where the hosts' TCP runs on the cores that compute)."""
    m = models[w]
    c0, c1 = m["compute"]
    compute_s = (c0 + c1 * batch) * share / speed
    small = (m["bn_calls"] + 1 + (1 if measured else 0)) * small_sum(nodes, per_node, link, measured)
    n = m["bytes"]
    comm = gradient_sum(n, nodes, per_node, link, measured, bf16)
    if not overlap or nodes * per_node == 1:
        return compute_s + small + comm
    d0, d1 = m["backward"]
    sent = 2 * (nodes - 1) / nodes * n / per_node * (0.5 if bf16 else 1)
    stolen = steal * sent
    backward = (d0 + d1 * batch) * share / speed + stolen
    # Buckets summed one after another as the backward pass completes them.
    end = 0.0
    for size, ready in buckets(w):
        end = max(end, ready * backward) + gradient_sum(size, nodes, per_node, link, measured, bf16)
    exposed = max(0.0, end - backward)
    return compute_s + stolen + small + exposed


# ---- measured runs: medians, efficiency, the model at each point ------------------------------
key = lambda r: (r["workload"], r["mode"], r["link"], int(r["nodes"]), int(r["ranks"]))
# The plots and the model's error use the default variant (no overlap, float32 sums); the
# others (overlap, bfloat16 sums) go into their own table.
variants = {}
for r in runs:
    variants.setdefault(key(r) + (r.get("variant", "default"),), []).append(r)
groups = {}
for r in runs:
    if r.get("variant", "default") == "default":
        groups.setdefault(key(r), []).append(r)
med = {k: {f: statistics.median(x[f] for x in v) for f in num if f in v[0]} | {"shares_cores": v[0]["shares_cores"], "n": len(v)}
       for k, v in groups.items()}
base = {(w, m): v["samples_per_s"] for (w, m, l, n, p), v in med.items() if p == 1}


def measured_share(nodes, ranks, threads=1):
    return max(1.0, ranks * threads / CORES)


for r in runs:
    if r["threads"] > 1:
        # The compute model is one thread's; a multi-threaded rank's efficiency is per core.
        b = base.get((r["workload"], r["mode"]))
        r["efficiency"] = r["samples_per_s"] / (r["ranks"] * r["threads"] * b) if b else float("nan")
        r["model_ms"] = float("nan")
        continue
    # Measured points get the model of their variant; with overlap, the bytes the rank sends cost
    # its compute what TCP costs the cores here (tcp_cost.csv), as the hosts' TCP runs on them.
    b = base.get((r["workload"], r["mode"]))
    r["efficiency"] = r["samples_per_s"] / (r["ranks"] * b) if b else float("nan")
    per_node = int(r["ranks"] // r["nodes"])
    v = r.get("variant", "default")
    r["model_ms"] = 1e3 * step_time(r["workload"], r["rank_batch"], int(r["nodes"]), per_node, r["link"], measured=True,
                                    share=measured_share(r["nodes"], r["ranks"]), overlap="overlap" in v, bf16="bf16" in v,
                                    steal=tcp_cpu(r["link"])) if r["workload"] in models else float("nan")


def cell(v):
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.4g}" if abs(v) >= 1e5 else f"{v:.4f}"
    return v


with open(os.path.join(out, "scaling.csv"), "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(runs[0].keys()), lineterminator="\n")
    wr.writeheader()
    for r in runs:
        wr.writerow({k: cell(v) for k, v in r.items()})

errors = []
for k, v in sorted(med.items()):
    w, m, l, n, p = k
    if w not in models:
        continue
    pred = 1e3 * step_time(w, v["rank_batch"], n, p // n, l, measured=True, share=measured_share(n, p))
    v["model_ms"] = pred
    v["error"] = pred / v["ms_step"] - 1
    v["efficiency"] = v["samples_per_s"] / (p * base[(w, m)]) if (w, m) in base else float("nan")
    errors.append((k, v))

# The other variants (overlap, bfloat16 sums) at the same points, one thread per rank.
variant_errors = []
for k, rows in sorted(variants.items()):
    if k[5] in ("default", "2threads") or k[0] not in models:
        continue
    ms = statistics.median(r["ms_step"] for r in rows)
    pred = statistics.median(r["model_ms"] for r in rows)
    variant_errors.append((k, ms, pred, pred / ms - 1))

# ---- predictions to 256 nodes ----------------------------------------------------------------
# Each workload's batches as measured (strong: the global batch; weak: rows per rank).
def measured_batch(w, mode, field, default):
    xs = [r[field] for r in runs if r["workload"] == w and r["mode"] == mode and r["ranks"] == 1]
    return int(xs[0]) if xs else default


# The threads' efficiency per core measured here: one rank with 2 threads against one with 1.
def thread_efficiency(w):
    two = [r["samples_per_s"] for r in runs if r["workload"] == w and r["mode"] == "strong" and r.get("variant") == "2threads"]
    return statistics.median(two) / (2 * base[(w, "strong")]) if two and (w, "strong") in base else 1.0


# Nodes: the small workloads' node is what was measured here (2 ranks x 1 thread). AlexNet's is a
# realistic CPU node: 2 sockets x 32 cores run as 2 ranks (one per socket) of 32 threads, each
# thread computing at this machine's one-thread speed times the 2-thread efficiency measured here
# (assumed to hold to 32 threads); the protocol's global batch of 256 for strong scaling, 128
# images per rank (256 per node) for weak.
NODE = {"alexnet": {"per_node": 2, "threads": 32, "global": 256, "weak": 128}}
PER_NODE = 2           # the others: a node as measured here, 2 ranks x 1 thread
pred_rows = []
node_counts = [2 ** i for i in range(9)]
for w in models:
    spec = NODE.get(w, {"per_node": PER_NODE, "threads": 1, "global": measured_batch(w, "strong", "global_batch", 256),
                        "weak": measured_batch(w, "weak", "rank_batch", 128)})
    per_node, threads = spec["per_node"], spec["threads"]
    speed = threads * (thread_efficiency(w) if threads > 1 else 1.0)
    # bfloat16 sums are predicted for AlexNet, whose gradients are what the network carries.
    sums = (False, True) if w in NODE else (False,)
    for mode in ("strong", "weak"):
        # Efficiency against one node (for the small workloads' nodes as measured here, against one rank).
        for link in ("10", "25", "100"):
            for overlap in (False, True):
                for bf16 in sums:
                    if w in NODE:
                        one_batch = spec["global"] / per_node if mode == "strong" else spec["weak"]
                        one = per_node * one_batch / step_time(w, one_batch, 1, per_node, "local", speed=speed)
                    else:
                        one_batch = spec["global"] if mode == "strong" else spec["weak"]
                        one = one_batch / step_time(w, one_batch, 1, 1, "local")
                    for nodes in node_counts:
                        ranks = nodes * per_node
                        batch = spec["global"] / ranks if mode == "strong" else spec["weak"]
                        if batch < 1:
                            continue
                        t = step_time(w, batch, nodes, per_node, link, overlap=overlap, bf16=bf16, speed=speed)
                        units = nodes if w in NODE else ranks
                        eff = (ranks * batch / t) / (units * one)
                        pred_rows.append({"workload": w, "mode": mode, "link_gbps": link, "overlap": overlap, "bf16": bf16,
                                          "nodes": nodes, "ranks": ranks, "threads": threads, "rank_batch": batch,
                                          "step_ms": 1e3 * t, "efficiency": eff, "samples_per_s": ranks * batch / t})
with open(os.path.join(out, "predictions.csv"), "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(pred_rows[0].keys()), lineterminator="\n")
    wr.writeheader()
    for r in pred_rows:
        wr.writerow({k: cell(v) for k, v in r.items()})

model_json = {"cores": CORES, "node_shared_path": {"alpha_s": node_path[0], "beta_s_per_byte": node_path[1]},
              "node_mpi": {"alpha_s": node_mpi[0], "beta_s_per_byte": node_mpi[1]},
              "tcp": {l: {"alpha_s": a, "beta_s_per_byte": b, "gbit_s": 8 / b / 1e9} for l, (a, b) in tcp_links.items()},
              "wire_efficiency": eta_wire,
              "compute": {w: {"c0_s": m["compute"][0], "c1_s_per_row": m["compute"][1], "backward_c0_s": m["backward"][0],
                              "backward_c1_s_per_row": m["backward"][1], "gradient_bytes": m["bytes"],
                              "small_sums_per_step": m["bn_calls"] + 1, "threads_efficiency": thread_efficiency(w)}
                          for w, m in models.items()},
              "tcp_cpu_s_per_byte": tcp_costs, "bucket_bytes": BUCKET_BYTES, "nodes": NODE}
with open(os.path.join(out, "model.json"), "w") as f:
    json.dump(model_json, f, indent=1)

# ---- plots -----------------------------------------------------------------------------------
workloads = sorted({k[0] for k in med})
titles = {"fmnist": "Fashion-MNIST MLP (7.7 MB gradients)", "gldv2head": "GLDv2 head (81,313 classes, 0.5 MB gradients)",
          "cnn": "Fashion-MNIST cnn (13 MB gradients)", "alexnet": "AlexNet, generated 224x224 images (229 MB gradients)"}
markers = {"local": "o", "shm": "o", "none": "s", "25": "^", "10": "v", "1": "D"}
label_link = lambda l: {"local": "1 rank", "shm": "1 host, shared memory", "none": "2 hosts, veth unshaped"}.get(l, f"hosts at {l} Gb/s")


def plot_measured(field, name, ylabel, ideal=False):
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.2), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        for mode, colour in (("strong", "tab:blue"), ("weak", "tab:orange")):
            pts = sorted((k, v) for k, v in med.items() if k[0] == w and k[1] == mode)
            for l in sorted({k[2] for k, _ in pts}):
                xs = [k[4] for k, v in pts if k[2] == l]
                ys = [v[field] for k, v in pts if k[2] == l]
                shared = [v["shares_cores"] == "yes" for k, v in pts if k[2] == l]
                ax.scatter(xs, ys, marker=markers.get(l, "x"), color=colour, facecolors=["none" if s else colour for s in shared],
                           label=f"{mode}, {label_link(l)}")
            if ideal and (w, mode) in base:
                xs = sorted({k[4] for k, _ in pts})
                ax.plot(xs, [x * base[(w, mode)] for x in xs], color=colour, lw=0.8, ls=":")
        if field == "efficiency":
            ax.axhline(1, color="grey", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ranks (hollow: ranks x threads exceed the 2 cores they share)")
        ax.set_ylabel(ylabel)
        ax.set_title(titles.get(w, w), fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)


plot_measured("samples_per_s", "throughput.png", "samples/s (dotted: linear from 1 rank)", ideal=True)
plot_measured("efficiency", "efficiency.png", "efficiency vs 1 rank")

# Stacked step split (strong scaling).
fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.2), squeeze=False)
for ax, w in zip(axes[0], workloads):
    pts = sorted(((k, v) for k, v in med.items() if k[0] == w and k[1] == "strong"), key=lambda kv: (kv[0][4], kv[0][3], kv[0][2]))
    names = [f"{k[3]}x{k[4] // k[3]}\n{k[2]}" for k, _ in pts]
    bottom = np.zeros(len(pts))
    for field, colour, lab in (("compute_ms", "tab:blue", "compute"), ("gradient_sum_ms", "tab:red", "gradient sum"),
                               ("bn_sync_ms", "tab:green", "BatchNorm sync"), ("wait_ms", "tab:grey", "waiting")):
        vals = np.array([v[field] for _, v in pts])
        ax.bar(names, vals, bottom=bottom, color=colour, label=lab)
        bottom += vals
    ax.plot(names, [v["ms_step"] for _, v in pts], "k_", markersize=18, label="step (measured)")
    ax.set_ylabel("ms per step (strong scaling, global batch 256)")
    ax.set_xlabel("nodes x ranks per node, link")
    ax.set_title(titles.get(w, w), fontsize=10)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(out, "step_split.png"), dpi=110)
plt.close(fig)

# The model to 256 nodes, with the measured points (AlexNet apart: its nodes are not this machine's).
small = sorted(w for w in models if w not in NODE)
fig, axes = plt.subplots(max(1, len(small)), 2, figsize=(12, 4.2 * max(1, len(small))), squeeze=False)
colours = {"10": "tab:red", "25": "tab:orange", "100": "tab:green"}
for i, w in enumerate(small):
    for j, mode in enumerate(("strong", "weak")):
        ax = axes[i][j]
        for link in ("10", "25", "100"):
            for overlap, ls in ((False, "-"), (True, "--")):
                rs = [r for r in pred_rows if r["workload"] == w and r["mode"] == mode and r["link_gbps"] == link and r["overlap"] == overlap
                      and not r["bf16"]]
                ax.plot([r["ranks"] for r in rs], [r["efficiency"] for r in rs], ls=ls, color=colours[link],
                        label=f"{link} Gb/s" + (", overlap" if overlap else ""))
        for k, v in errors:
            if k[0] == w and k[1] == mode and k[4] > 1:
                ax.scatter([k[4]], [v["efficiency"]], marker=markers.get(k[2], "x"), color="k", zorder=5,
                           facecolors="none" if v["shares_cores"] == "yes" else "k")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.1)
        ax.set_xlabel(f"ranks ({PER_NODE} per node, 1 thread each; black: measured here, hollow: sharing cores)")
        ax.set_ylabel("efficiency vs 1 rank")
        b = measured_batch(w, mode, "global_batch" if mode == "strong" else "rank_batch", 0)
        ax.set_title(f"{titles.get(w, w)}, {mode}" + (f" (global batch {b})" if mode == "strong" else f" ({b} rows per rank)"), fontsize=9)
        ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(out, "model.png"), dpi=110)
plt.close(fig)

# AlexNet: the model on realistic nodes (left, middle), and against what was measured here (right).
if "alexnet" in models:
    spec = NODE["alexnet"]
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for ax, mode in zip(axes[:2], ("strong", "weak")):
        for link in ("10", "25", "100"):
            for (overlap, bf16), ls in (((False, False), "-"), ((True, False), "--"), ((False, True), ":"), ((True, True), "-.")):
                rs = [r for r in pred_rows if (r["workload"], r["mode"], r["link_gbps"], r["overlap"], r["bf16"]) == ("alexnet", mode, link, overlap, bf16)]
                ax.plot([r["nodes"] for r in rs], [r["efficiency"] for r in rs], ls=ls, color=colours[link],
                        label=f"{link} Gb/s" + (", overlap" if overlap else "") + (", bf16" if bf16 else ""))
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(f"nodes ({spec['per_node']} ranks x {spec['threads']} threads each)")
        ax.set_ylabel("efficiency vs 1 node")
        ax.set_title(f"AlexNet, {mode} scaling, predicted" + (f" (global batch {spec['global']})" if mode == "strong"
                     else f" ({spec['weak']} images per rank)"), fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    ax = axes[2]
    pts = [(k, v["ms_step"], v["model_ms"]) for k, v in errors if k[0] == "alexnet"]
    pts += [(k, ms, pred) for k, ms, pred, _ in variant_errors if k[0] == "alexnet"]
    for k, ms, pred in pts:
        variant = k[5] if len(k) > 5 else "default"
        ax.scatter([ms / 1e3], [pred / 1e3], marker=markers.get(k[2], "x"),
                   color={"default": "k", "overlap": "tab:blue", "bf16": "tab:red", "overlap_bf16": "tab:purple"}.get(variant, "grey"))
        ax.annotate(f"{k[1][0]} {k[3]}x{k[4] // k[3]} {k[2]} {variant if variant != 'default' else ''}", (ms / 1e3, pred / 1e3), fontsize=5)
    if pts:
        lo, hi = min(min(p[1], p[2]) for p in pts) / 1e3 * 0.9, max(max(p[1], p[2]) for p in pts) / 1e3 * 1.1
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.85, hi * 0.85], [lo * 1.15, hi * 1.15], color="grey", alpha=0.15, label="within 15%")
        ax.set_xscale("log"); ax.set_yscale("log")
    ax.set_xlabel("measured here, s per step (s: strong, w: weak; nodes x ranks per node, link)")
    ax.set_ylabel("model, s per step")
    ax.set_title("AlexNet: the model against this machine's points (black: default, blue: overlap, red: bf16, purple: both)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "alexnet_model.png"), dpi=110)
    plt.close(fig)

# All-reduce sweeps and their fits.
if sweeps:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (l, path), (a, b) in sorted(fits.items()):
        pts = sorted((r["bytes"], r["seconds"]) for r in sweeps if r["link"] == l and r["path"] == path)
        xs = np.array([p[0] for p in pts])
        eager_xs = xs if l == "shm" else xs[xs <= EAGER_BYTES]
        line = ax.loglog(xs, [p[1] for p in pts], "o", ms=3, label=f"{label_link(l)}, {path}: a={a * 1e6:.1f} us, {8 / b / 1e9:.2f} Gb/s")
        ax.loglog(eager_xs, a + b * eager_xs, "-", lw=0.8, color=line[0].get_color())
        if path == "mpi" and l in large:
            a2, b2 = large[l]
            big = xs[xs > EAGER_BYTES]
            ax.loglog(big, a2 + b2 * big, "--", lw=0.8, color=line[0].get_color(), label=f"  beyond {EAGER_BYTES >> 20} MB: {8 / b2 / 1e9:.2f} Gb/s")
    ax.set_xlabel("bytes summed (float32)")
    ax.set_ylabel("seconds per all-reduce, 2 ranks")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "allreduce.png"), dpi=110)
    plt.close(fig)

# Time to the target mAP (strong scaling), per workload, with the model's curves from the epochs
# one rank needed.
ttt_workloads = sorted({r.get("workload", "fmnist") for r in ttt})
if ttt:
    fig, axes = plt.subplots(1, len(ttt_workloads), figsize=(6.5 * len(ttt_workloads), 4.2), squeeze=False)
    for ax, w in zip(axes[0], ttt_workloads):
        rows = [r for r in ttt if r.get("workload", "fmnist") == w]
        for r in rows:
            if r["seconds_to_target"]:
                ax.scatter([int(r["ranks"])], [float(r["seconds_to_target"])], color="k", zorder=5,
                           marker=markers.get(r["link"], "x"), label=f"measured, {label_link(r['link'])}")
        first = [r for r in rows if r["ranks"] == "1" and r["epochs_to_target"]]
        if first and w in models:
            epochs, batch = int(first[0]["epochs_to_target"]), 256
            steps = epochs * (60000 // batch)
            for link in ("10", "25", "100"):
                xs, ys = [], []
                for nodes in node_counts:
                    if batch / (nodes * PER_NODE) < 1:
                        continue
                    t = step_time(w, batch / (nodes * PER_NODE), nodes, PER_NODE, link, overlap=True)
                    xs.append(nodes * PER_NODE); ys.append(steps * t)
                ax.plot(xs, ys, color=colours[link], label=f"model, {link} Gb/s, overlap")
            ax.set_title(f"{titles.get(w, w)}: to mAP@all {first[0]['target_map']} ({epochs} epochs, global batch {batch})", fontsize=9)
        ax.set_xscale("log", base=2); ax.set_yscale("log")
        ax.set_xlabel("ranks"); ax.set_ylabel("training seconds to the target")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "time_to_target.png"), dpi=110)
    plt.close(fig)

# ---- summary ---------------------------------------------------------------------------------
lines = ["# Scaling results", "", f"{len(runs)} runs; medians over repetitions. Efficiency: samples/s per core (ranks x threads) over the one-rank, one-thread "
         "figure of the same workload and mode. Model: its step time for the point (with the measuring barrier).", "",
         "| workload | mode | link | nodes x ranks/node | samples/s | ms/step p50 / p95 | compute | gradient sum | BN sync | wait | efficiency | model ms | error | shares cores |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for k, v in errors:
    w, m, l, n, p = k
    lines.append(f"| {w} | {m} | {l} | {n} x {p // n} | {v['samples_per_s']:.0f} | {v['ms_step_p50']:.2f} / {v['ms_step_p95']:.2f} | "
                 f"{v['compute_ms']:.2f} | {v['gradient_sum_ms']:.2f} | {v['bn_sync_ms']:.2f} | {v['wait_ms']:.2f} | "
                 f"{v['efficiency']:.2f} | {v['model_ms']:.2f} | {100 * v['error']:+.1f}% | {v['shares_cores']} |")
def error_line(what, es):
    if not es:
        return f"Model error, {what}: no points."
    return (f"Model error, {what}: median {100 * statistics.median(es):.1f}%, largest {100 * max(es):.1f}%; "
            f"{sum(e <= 0.15 for e in es)} of {len(es)} within 15%.")


lines += ["", error_line("points with a core per rank", [abs(v["error"]) for _, v in errors if v["shares_cores"] == "no"]), "",
          error_line("points whose ranks share cores (compute scaled by ranks / cores)",
                     [abs(v["error"]) for _, v in errors if v["shares_cores"] == "yes"]), ""]
for w in sorted({k[0] for k, _ in errors}):
    lines += [error_line(f"{w}, every point", [abs(v["error"]) for k, v in errors if k[0] == w]), ""]
if variant_errors:
    lines += ["Overlap and bfloat16 variants (one thread per rank), measured against the model of the same variant (with overlap, "
              "each byte a rank sends costs its compute what TCP costs the cores here, tcp_cost.csv):", "",
              "| workload | mode | link | nodes x ranks/node | variant | ms/step | model ms | error |", "|---|---|---|---|---|---|---|---|"]
    for k, ms, pred, e in variant_errors:
        w, m, l, n, p, v = k
        lines.append(f"| {w} | {m} | {l} | {n} x {p // n} | {v} | {ms:.1f} | {pred:.1f} | {100 * e:+.1f}% |")
    lines += ["", error_line("the variants", [abs(e) for *_, e in variant_errors]), ""]
lines += ["## Fits", "", f"- node shared-memory path (2 ranks): alpha {node_path[0] * 1e6:.2f} us, {1 / node_path[1] / 1e9:.2f} GB/s",
          f"- MPI_Allreduce within the node: alpha {node_mpi[0] * 1e6:.2f} us, {1 / node_mpi[1] / 1e9:.2f} GB/s"]
for l, (a, b) in sorted(tcp_links.items()):
    lines.append(f"- TCP between namespace hosts, {label_link(l)}: alpha {a * 1e6:.1f} us, {8 / b / 1e9:.2f} Gb/s up to {EAGER_BYTES >> 20} MB"
                 + (f", {8 / large[l][1] / 1e9:.2f} Gb/s beyond (a rendezvous per message)" if l in large else ""))
if eta:
    lines.append(f"- wire efficiency (the rate's time per byte over the fitted one, at shaped links below half the unshaped "
                 f"veth's {ceiling / 1e9:.1f} Gb/s): {eta_wire:.2f}; predictions at 10, 25 and 100 Gb/s use it")
else:
    lines.append(f"- no shaped link measured: predictions at 10, 25 and 100 Gb/s assume a wire efficiency of {eta_wire:.2f}"
                 + ("" if "none" in tcp_links else " and 25 us of TCP latency"))
for w, m in models.items():
    lines.append(f"- compute, {w}: {m['compute'][0] * 1e3:.2f} ms + {m['compute'][1] * 1e6:.1f} us per row; backward "
                 f"{m['backward'][0] * 1e3:.2f} ms + {m['backward'][1] * 1e6:.1f} us per row; {m['bn_calls'] + 1:.0f} small sums per step")
for w, cost in sorted(tcp_costs.items()):
    lines.append(f"- CPU per GB moved between the namespace hosts ({w}): {cost * 1e12:.0f} ms (bench/tcp_cost.sh)")
lines += ["", "## Predicted efficiency (2 ranks per node)", "", "| workload | mode | link | nodes | without overlap | with overlap |", "|---|---|---|---|---|---|"]
for w in small:
    for mode in ("strong", "weak"):
        for link in ("10", "25", "100"):
            for nodes in (8, 64, 128 if mode == "strong" else 256):
                a = [r for r in pred_rows if (r["workload"], r["mode"], r["link_gbps"], r["nodes"]) == (w, mode, link, nodes) and not r["bf16"]]
                if len(a) == 2:
                    no, yes = sorted(a, key=lambda r: r["overlap"])
                    lines.append(f"| {w} | {mode} | {link} Gb/s | {nodes} | {no['efficiency']:.3f} | {yes['efficiency']:.3f} |")
if "alexnet" in models:
    spec = NODE["alexnet"]
    speed = spec["threads"] * thread_efficiency("alexnet")
    lines += ["", f"## AlexNet predicted: nodes of {spec['per_node']} ranks x {spec['threads']} threads", "",
              f"Each thread computes at this machine's one-thread speed x {thread_efficiency('alexnet'):.2f} (the 2-thread efficiency measured "
              f"here). Strong: global batch {spec['global']}; weak: {spec['weak']} images per rank. Step time in ms and efficiency against one "
              "node without overlap (with it, one node also hides its shared-window sum); `bound`: the node count from which communication (the step less the rank's compute) takes longer than the compute.", "",
              "| mode | link | sums | 1 node | 8 nodes | 64 nodes | 256 nodes | bound from |", "|---|---|---|---|---|---|---|---|"]
    for mode in ("strong", "weak"):
        for link in ("10", "25", "100"):
            for overlap, bf16 in ((False, False), (True, False), (False, True), (True, True)):
                rs = {r["nodes"]: r for r in pred_rows
                      if (r["workload"], r["mode"], r["link_gbps"], r["overlap"], r["bf16"]) == ("alexnet", mode, link, overlap, bf16)}
                cells = [f"{rs[n]['step_ms']:.0f} ms, {rs[n]['efficiency']:.2f}" if n in rs else "-" for n in (1, 8, 64, 256)]
                bound = next((n for n, r in sorted(rs.items())
                              if r["step_ms"] / 1e3 > 2 * step_time("alexnet", r["rank_batch"], 1, 1, "local", speed=speed)), None)
                what = ("overlap" if overlap else "after backward") + (", bf16" if bf16 else ", float32")
                lines.append(f"| {mode} | {link} Gb/s | {what} | " + " | ".join(cells) + f" | {bound if bound else 'beyond 256'} |")
    # ImageNet100's training (13,000 images, batch 256: 50 steps an epoch, 100 epochs) on 64-core nodes: at most 256 ranks.
    lines += ["", "ImageNet100's training (5,000 steps of the global batch 256) on nodes of 64 cores: 2 ranks x 32 threads a node, "
              "1 rank x 64 threads where the batch leaves fewer images than ranks; evaluations apart.", "",
              "| nodes | ranks x threads | images per rank | link | sums | step ms | training hours |", "|---|---|---|---|---|---|---|"]
    for nodes in (1, 8, 64, 256):
        per_node = 2 if 2 * nodes <= spec["global"] else 1
        threads = 64 // per_node
        sp = threads * thread_efficiency("alexnet")
        batch = spec["global"] / (nodes * per_node)
        for link in ("10", "25", "100") if nodes > 1 else ("local",):
            for bf16 in (False, True) if nodes > 1 else (False,):
                t = step_time("alexnet", batch, nodes, per_node, link, overlap=nodes > 1, bf16=bf16, speed=sp)
                lines.append(f"| {nodes} | {nodes * per_node} x {threads} | {batch:g} | {link + ' Gb/s' if nodes > 1 else 'none'} | "
                             f"{('overlap, ' + ('bf16' if bf16 else 'float32')) if nodes > 1 else 'shared window'} | "
                             f"{1e3 * t:.0f} | {5000 * t / 3600:.2f} |")
others = sorted(k for k in variants if k[5] != "default")
if others:
    lines += ["", "## Overlap and bfloat16 sums (measured, same points)", "",
              "| workload | mode | link | nodes x ranks/node | variant | samples/s | vs default | gradient sum (exposed) | background sum |",
              "|---|---|---|---|---|---|---|---|---|"]
    for k in others:
        w, m, l, n, p, v = k
        rows = variants[k]
        base_rows = variants.get(k[:5] + ("default",), [])
        s = statistics.median(r["samples_per_s"] for r in rows)
        d = statistics.median(r["samples_per_s"] for r in base_rows) if base_rows else float("nan")
        g = statistics.median(r["gradient_sum_ms"] for r in rows)
        bg = statistics.median(float(r.get("background_sum_ms", 0) or 0) for r in rows)
        lines.append(f"| {w} | {m} | {l} | {n} x {p // n} | {v} | {s:.0f} | {s / d:.3f}x | {g:.2f} ms | {bg:.2f} ms |")
    lines += ["", "(2threads: one rank with 2 BLAS threads against one with 1: the threads axis.)"]
if ttt:
    lines += ["", "## Time to target (measured)", "", "| workload | nodes | ranks | link | target | epochs | seconds | final mAP@all | shares cores |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in ttt:
        seconds = f"{float(r['seconds_to_target']):.1f}" if r["seconds_to_target"] else "not reached"
        lines.append(f"| {r.get('workload', 'fmnist')} | {r['nodes']} | {r['ranks']} | {r['link']} | {r['target_map']} | {r['epochs_to_target'] or '-'} | "
                     f"{seconds} | {r['final_map']} | {r['shares_cores']} |")
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
