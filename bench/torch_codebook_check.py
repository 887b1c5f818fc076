#!/usr/bin/env python3
"""Checks that `orthohash codebook --seed S` gives the codebook the authors' PyTorch code draws
right after torch.manual_seed(S), bit for bit, for methods B, N and O over many seeds and shapes.

Needs torch (pip install "torch==2.13.0+cpu") and a release build (swift build -c release).
Prints one line per case and a final count; exits 1 on any mismatch.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch


def reference(method, classes, nbit, seed):
    """The draw of the authors' train_hashing.py, in the order it touches the generator."""
    torch.manual_seed(seed)
    if method == "B":
        return (torch.bernoulli(torch.ones(classes, nbit) * 0.5) * 2.0 - 1.0).sign()
    if method == "N":
        return torch.randn(classes, nbit).sign()
    # O: rejection sampling at a falling threshold, then a row permutation.
    codebook = torch.zeros(classes, nbit)
    threshold, rejected, i = 0.61, 0, 0
    while i < classes:
        c = torch.randn(nbit).sign()
        # The reference compares codeword by codeword; all at once gives the same float32 values.
        if i == 0 or not bool((0.5 * (nbit - codebook[:i] @ c) / nbit < threshold).any()):
            codebook[i] = c
            i += 1
        else:
            rejected += 1
            if rejected >= 10000:
                rejected, threshold = 0, threshold - 0.01
                if threshold < 0.2:
                    raise ValueError("cannot find")
    return codebook[torch.randperm(classes)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=".build/release/orthohash")
    p.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 per shape")
    p.add_argument("--methods", default="BNO", help="which of B, N, O to check")
    a = p.parse_args()
    shapes = {
        "B": [(10, 64), (10, 16), (100, 128), (1000, 512), (3, 5), (81313, 128)],
        "N": [(10, 64), (10, 16), (7, 9), (3, 5), (100, 48), (2, 7)],
        "O": [(10, 64), (10, 16), (100, 16), (10, 8), (20, 12), (40, 32)],
    }
    checked = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cb.npy")
        for method, cases in shapes.items():
            if method not in a.methods:
                continue
            for classes, nbit in cases:
                seeds = range(3) if classes * nbit > 1_000_000 else range(a.seeds)
                for seed in list(seeds) + [2**32 + 5, 2**63 + 1]:
                    want = reference(method, classes, nbit, seed).numpy().astype(np.int8)
                    subprocess.run([a.binary, "codebook", "--classes", str(classes), "--nbit", str(nbit),
                                    "--method", method, "--seed", str(seed), "--out", out],
                                   check=True, stdout=subprocess.DEVNULL)
                    got = np.load(out)
                    checked += 1
                    if not np.array_equal(want, got):
                        failed += 1
                        print(f"MISMATCH {method} {classes}x{nbit} seed {seed}: "
                              f"{int((want != got).sum())} entries differ")
                print(f"{method} {classes}x{nbit}: {len(seeds) + 2} seeds checked")
    print(f"{checked} codebooks compared with torch {torch.__version__}: {checked - failed} identical, {failed} differ")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
