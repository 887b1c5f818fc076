#!/usr/bin/python3
"""Plots of runs and of retrieval curves, as PNG files (Debian's python3-matplotlib: install it
with `scripts/setup.sh --scaling`).

    /usr/bin/python3 scripts/plots.py --runs runs/fm16 runs/fm64 --curves c16.csv c64.csv --out docs/plots

--runs: run directories; training.png shows each run's loss, accuracy and mAP per epoch (from
its metrics.jsonl; mAP where the run evaluated). --curves: CSV files written by
`orthohash map ... --curves FILE`; curves.png shows the precision-recall curve of Hamming
ranking (one point per radius 0..K) and the P@N curve, a line per file. --names sets the
legend's names (default: the directory or file names).
"""
import argparse
import csv
import json
import os
import sys


def fail(message):
    print(f"plots: {message}", file=sys.stderr)
    sys.exit(1)


def read_metrics(run):
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.isfile(path):
        fail(f"{path}: no such file (is {run} a run directory?)")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    fail(f"{path}: line {n} is not JSON ({e.msg})")
    if not rows:
        fail(f"{path}: no epochs yet")
    return rows


def read_curves(path):
    if not os.path.isfile(path):
        fail(f"{path}: no such file")
    radius, top_n = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["curve", "x", "precision", "recall"]:
            fail(f"{path}: not a --curves file of orthohash map (header {reader.fieldnames})")
        for row in reader:
            x, p = int(row["x"]), float(row["precision"])
            if row["curve"] == "hamming_radius":
                radius.append((x, p, float(row["recall"])))
            elif row["curve"] == "top_n":
                top_n.append((x, p))
    return radius, top_n


def save(fig, axes, labels, path):
    """Titles and axis labels (title, x, y or None) on each panel, a grid and a legend; the PNG."""
    for ax, (title, x, y) in zip(axes, labels):
        ax.set_title(title)
        ax.set_xlabel(x)
        if y:
            ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], help="run directories")
    parser.add_argument("--curves", nargs="*", default=[], help="CSV files of orthohash map --curves")
    parser.add_argument("--names", nargs="*", help="legend names: one per run, then one per curves file")
    parser.add_argument("--out", required=True, help="directory for training.png and curves.png")
    args = parser.parse_args()
    if not args.runs and not args.curves:
        fail("give --runs, --curves or both")
    names = args.names or [os.path.basename(os.path.normpath(p)) for p in args.runs + args.curves]
    if len(names) != len(args.runs) + len(args.curves):
        fail(f"--names gives {len(names)} names for {len(args.runs) + len(args.curves)} runs and files")
    if not os.path.isdir(args.out):
        fail(f"--out {args.out}: no such directory")
    runs = [(name, read_metrics(run)) for name, run in zip(names, args.runs)]
    curves = [(name, read_curves(path)) for name, path in zip(names[len(args.runs):], args.curves)]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("matplotlib is missing: scripts/setup.sh --scaling installs Debian's python3-matplotlib (run this with /usr/bin/python3)")

    written = []
    if runs:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for name, rows in runs:
            epochs = [r["epoch"] for r in rows]
            axes[0].plot(epochs, [r["loss"] for r in rows], marker="o", ms=3, label=name)
            axes[1].plot(epochs, [r["accuracy"] for r in rows], marker="o", ms=3, label=name)
            evaluated = [r for r in rows if "map" in r]
            if evaluated:
                cutoff = sorted(evaluated[-1]["map"])[0]
                axes[2].plot([r["epoch"] for r in evaluated], [r["map"][cutoff] for r in evaluated], marker="o", ms=4,
                             label=f"{name} (mAP@{cutoff})")
        labels = [("training loss", "epoch", None), ("training accuracy", "epoch", None), ("mAP (evaluations)", "epoch", None)]
        written.append(save(fig, axes, labels, os.path.join(args.out, "training.png")))
    if curves:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for name, (radius, top_n) in curves:
            if radius:
                axes[0].plot([r for _, _, r in radius], [p for _, p, _ in radius], marker="o", ms=3, label=name)
            if top_n:
                axes[1].plot([n for n, _ in top_n], [p for _, p in top_n], marker="o", ms=3, label=name)
        labels = [("precision-recall (Hamming radius 0..K)", "recall", "precision"), ("precision at N (Hamming ranking)", "N", "P@N")]
        written.append(save(fig, axes, labels, os.path.join(args.out, "curves.png")))
    for path in written:
        print(f"plots: wrote {path}")


if __name__ == "__main__":
    main()
