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

# Buckets of the gradients in the order the backward pass completes them (hash layer first,
# first hidden layer last), with the share of the backward pass's FLOPs done when each is ready.
# Per-rank batch B cancels out of the shares.
def buckets(workload):
    if workload == "fmnist":
        layers, head = [(784, 1024), (1024, 1024), (1024, 64)], 0
    else:
        # The loss over 81,313 classes comes first in the backward; the hash layer's dW follows it.
        layers, head = [(2048, 64)], 2 * 64 * 81313
    order = list(reversed(layers))
    # dW, and dX except for the first layer.
    flops = [d_in * d_out * (1 if k == len(order) - 1 else 2) for k, (d_in, d_out) in enumerate(order)]
    total, done, out_ = head + sum(flops), head, []
    for (d_in, d_out), f in zip(order, flops):
        done += f
        out_.append(((d_in * d_out + 3 * d_out) * 4, done / total))
    return out_


# ---- all-reduce fits -------------------------------------------------------------------------
def fit(points):
    """alpha + beta n through (n, t), least squares on relative error."""
    n = np.array([p[0] for p in points]); t = np.array([p[1] for p in points])
    a = np.stack([1 / t, n / t], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    return max(alpha, 1e-7), max(beta, 1e-13)


fits = {}
for r in sweeps:
    fits.setdefault((r["link"], r["path"]), []).append((r["bytes"], r["seconds"]))
fits = {k: fit(v) for k, v in fits.items()}
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


def link_params(link, measured=True):
    """alpha, beta of one link: as measured where it was (the points measured here), else the
    unshaped TCP latency and the rate at the measured wire efficiency. Predictions use the
    latter at every rate: the namespace hosts' unshaped veth tops out where this machine's two
    cores do (about 10 Gb/s), which says nothing of a real NIC's."""
    if measured and link in tcp_links:
        return tcp_links[link]
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
        a, b = link_params(link, measured)
        t += allreduce(n / per_node * (0.5 if bf16 else 1), nodes, a, b * per_node)
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


def step_time(w, batch, nodes, per_node, link, overlap=False, measured=False, share=1.0, bf16=False):
    """Seconds per step: compute (slowed by `share` where ranks outnumber cores), the small sums
    (BatchNorm's, the control word, and for `measured` points the barrier bench runs put before
    the gradient sum), and the gradient sum (the gather of updated shards is inside the shared
    path's fit), behind the backward pass with overlap. `measured`: a point measured here, with
    its link's own fit."""
    m = models[w]
    c0, c1 = m["compute"]
    compute_s = (c0 + c1 * batch) * share
    small = (m["bn_calls"] + 1 + (1 if measured else 0)) * small_sum(nodes, per_node, link, measured)
    n = m["bytes"]
    comm = gradient_sum(n, nodes, per_node, link, measured, bf16)
    if not overlap or nodes * per_node == 1:
        return compute_s + small + comm
    d0, d1 = m["backward"]
    backward = (d0 + d1 * batch) * share
    # Buckets summed one after another as the backward pass completes them.
    end = 0.0
    for size, ready in buckets(w):
        end = max(end, ready * backward) + gradient_sum(size, nodes, per_node, link, measured, bf16)
    exposed = max(0.0, end - backward)
    return compute_s + small + exposed


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
    # Measured points get the model without overlap (the overlap variant too: on this machine
    # the cores that compute also move the bytes, and the background sums hid nothing).
    b = base.get((r["workload"], r["mode"]))
    r["efficiency"] = r["samples_per_s"] / (r["ranks"] * b) if b else float("nan")
    per_node = int(r["ranks"] // r["nodes"])
    r["model_ms"] = 1e3 * step_time(r["workload"], r["rank_batch"], int(r["nodes"]), per_node, r["link"], measured=True,
                                    share=measured_share(r["nodes"], r["ranks"]),
                                    bf16=r.get("variant") == "bf16") if r["workload"] in models else float("nan")
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

# ---- predictions to 256 nodes ----------------------------------------------------------------
PER_NODE = 2           # a node as measured here: 2 ranks x 1 thread
GLOBAL, WEAK = 256, 128
pred_rows = []
node_counts = [2 ** i for i in range(9)]
for w in models:
    for mode in ("strong", "weak"):
        one = step_time(w, GLOBAL if mode == "strong" else WEAK, 1, 1, "local")
        for link in ("10", "25", "100"):
            for overlap in (False, True):
                for nodes in node_counts:
                    ranks = nodes * PER_NODE
                    batch = GLOBAL / ranks if mode == "strong" else WEAK
                    if batch < 1:
                        continue
                    t = step_time(w, batch, nodes, PER_NODE, link, overlap=overlap)
                    # Efficiency against one rank: samples/s per rank over one rank's samples/s.
                    eff = (batch / t) / ((GLOBAL if mode == "strong" else WEAK) / one)
                    pred_rows.append({"workload": w, "mode": mode, "link_gbps": link, "overlap": overlap, "nodes": nodes,
                                      "ranks": ranks, "rank_batch": batch, "step_ms": 1e3 * t, "efficiency": eff,
                                      "samples_per_s": ranks * batch / t})
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
                              "small_sums_per_step": m["bn_calls"] + 1} for w, m in models.items()}}
with open(os.path.join(out, "model.json"), "w") as f:
    json.dump(model_json, f, indent=1)

# ---- plots -----------------------------------------------------------------------------------
workloads = sorted({k[0] for k in med})
titles = {"fmnist": "Fashion-MNIST MLP (7.7 MB gradients)", "gldv2head": "GLDv2 head (81,313 classes, 0.5 MB gradients)"}
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

# The model to 256 nodes, with the measured points.
fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * len(models)), squeeze=False)
colours = {"10": "tab:red", "25": "tab:orange", "100": "tab:green"}
for i, w in enumerate(sorted(models)):
    for j, mode in enumerate(("strong", "weak")):
        ax = axes[i][j]
        for link in ("10", "25", "100"):
            for overlap, ls in ((False, "-"), (True, "--")):
                rs = [r for r in pred_rows if r["workload"] == w and r["mode"] == mode and r["link_gbps"] == link and r["overlap"] == overlap]
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
        ax.set_title(f"{titles.get(w, w)}, {mode}" + (" (global batch 256)" if mode == "strong" else " (128 rows per rank)"), fontsize=9)
        ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(out, "model.png"), dpi=110)
plt.close(fig)

# All-reduce sweeps and their fits.
if sweeps:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (l, path), (a, b) in sorted(fits.items()):
        pts = sorted((r["bytes"], r["seconds"]) for r in sweeps if r["link"] == l and r["path"] == path)
        xs = np.array([p[0] for p in pts])
        line = ax.loglog(xs, [p[1] for p in pts], "o", ms=3, label=f"{label_link(l)}, {path}: a={a * 1e6:.1f} us, {8 / b / 1e9:.2f} Gb/s")
        ax.loglog(xs, a + b * xs, "-", lw=0.8, color=line[0].get_color())
    ax.set_xlabel("bytes summed (float32)")
    ax.set_ylabel("seconds per all-reduce, 2 ranks")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "allreduce.png"), dpi=110)
    plt.close(fig)

# Time to the target mAP (strong scaling).
if ttt:
    first = [r for r in ttt if r["ranks"] == "1" and r["epochs_to_target"]]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in ttt:
        if r["seconds_to_target"]:
            ax.scatter([int(r["ranks"])], [float(r["seconds_to_target"])], color="k", zorder=5,
                       marker=markers.get(r["link"], "x"), label=f"measured, {label_link(r['link'])}")
    if first and "fmnist" in models:
        epochs = int(first[0]["epochs_to_target"])
        steps = epochs * (60000 // GLOBAL)
        for link in ("10", "25", "100"):
            xs, ys = [], []
            for nodes in node_counts:
                if GLOBAL / (nodes * PER_NODE) < 1:
                    continue
                t = step_time("fmnist", GLOBAL / (nodes * PER_NODE), nodes, PER_NODE, link, overlap=True)
                xs.append(nodes * PER_NODE); ys.append(steps * t)
            ax.plot(xs, ys, color=colours[link], label=f"model, {link} Gb/s, overlap")
        ax.set_title(f"Fashion-MNIST to mAP@all {first[0]['target_map']} ({epochs} epochs, global batch {GLOBAL})", fontsize=9)
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
lines += ["## Fits", "", f"- node shared-memory path (2 ranks): alpha {node_path[0] * 1e6:.2f} us, {1 / node_path[1] / 1e9:.2f} GB/s",
          f"- MPI_Allreduce within the node: alpha {node_mpi[0] * 1e6:.2f} us, {1 / node_mpi[1] / 1e9:.2f} GB/s"]
for l, (a, b) in sorted(tcp_links.items()):
    lines.append(f"- TCP between namespace hosts, {label_link(l)}: alpha {a * 1e6:.1f} us, {8 / b / 1e9:.2f} Gb/s")
if eta:
    lines.append(f"- wire efficiency (the rate's time per byte over the fitted one, at shaped links below half the unshaped "
                 f"veth's {ceiling / 1e9:.1f} Gb/s): {eta_wire:.2f}; predictions at 10, 25 and 100 Gb/s use it")
else:
    lines.append(f"- no shaped link measured: predictions at 10, 25 and 100 Gb/s assume a wire efficiency of {eta_wire:.2f}"
                 + ("" if "none" in tcp_links else " and 25 us of TCP latency"))
for w, m in models.items():
    lines.append(f"- compute, {w}: {m['compute'][0] * 1e3:.2f} ms + {m['compute'][1] * 1e6:.1f} us per row; backward "
                 f"{m['backward'][0] * 1e3:.2f} ms + {m['backward'][1] * 1e6:.1f} us per row; {m['bn_calls'] + 1:.0f} small sums per step")
lines += ["", "## Predicted efficiency (2 ranks per node)", "", "| workload | mode | link | nodes | without overlap | with overlap |", "|---|---|---|---|---|---|"]
for w in models:
    for mode in ("strong", "weak"):
        for link in ("10", "25", "100"):
            for nodes in (8, 64, 128 if mode == "strong" else 256):
                a = [r for r in pred_rows if (r["workload"], r["mode"], r["link_gbps"], r["nodes"]) == (w, mode, link, nodes)]
                if len(a) == 2:
                    no, yes = sorted(a, key=lambda r: r["overlap"])
                    lines.append(f"| {w} | {mode} | {link} Gb/s | {nodes} | {no['efficiency']:.3f} | {yes['efficiency']:.3f} |")
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
    lines += ["", "## Time to target (measured)", "", "| nodes | ranks | link | epochs | seconds | final mAP@all | shares cores |", "|---|---|---|---|---|---|---|"]
    for r in ttt:
        seconds = f"{float(r['seconds_to_target']):.1f}" if r["seconds_to_target"] else "not reached"
        lines.append(f"| {r['nodes']} | {r['ranks']} | {r['link']} | {r['epochs_to_target'] or '-'} | {seconds} | {r['final_map']} | {r['shares_cores']} |")
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
