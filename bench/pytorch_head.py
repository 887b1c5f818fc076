#!/usr/bin/env python3
"""PyTorch reference for the GLDv2-shaped step (needs torch; not part of the product): a linear
backbone (hash_fc = Linear(D, K, no bias) + BatchNorm1d), cosines to a fixed +-1 codebook of C
classes, the cosine-margin softmax cross-entropy (s = 8, m = 0.2), Adam; on random float16
descriptors as bench/head.sh feeds orthohash. Two versions of the backward pass:

  autograd     loss.backward() through F.cross_entropy over the (B, C) logits
  hand-written the logits' gradient s (softmax(z) - y) / B written by hand (one pass, in place),
               then u.backward(gradient): autograd only below the cosines

Prints ms/step (median of the timed steps) for each, one line each.

  python3 bench/pytorch_head.py --threads 1 --nbit 64 [--classes 81313] [--steps 20]
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nbit", type=int, default=64)
    p.add_argument("--classes", type=int, default=81_313)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rows", type=int, default=8192)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    x16 = torch.randn(a.rows, a.dim, generator=g).half()
    y = torch.randint(0, a.classes, (a.rows,), generator=g)
    codebook = (torch.randint(0, 2, (a.classes, a.nbit), generator=g).float() * 2 - 1) / a.nbit ** 0.5
    s, m = 8.0, 0.2
    for version in ("autograd", "hand-written"):
        torch.manual_seed(0)
        fc = nn.Linear(a.dim, a.nbit, bias=False)
        nn.init.normal_(fc.weight, std=0.01)
        bn = nn.BatchNorm1d(a.nbit)
        opt = torch.optim.Adam(list(fc.parameters()) + list(bn.parameters()), lr=1e-3)
        times = []
        perm = torch.randperm(a.rows, generator=g)
        for step in range(a.warmup + a.steps):
            t = time.perf_counter()
            idx = perm[(step * a.batch) % (a.rows - a.batch):][: a.batch]
            xb, yb = x16[idx].float(), y[idx]
            opt.zero_grad(set_to_none=True)
            v = bn(fc(xb))
            u = F.normalize(v, dim=1) @ codebook.t()
            if version == "autograd":
                z = s * (u - m * F.one_hot(yb, a.classes))
                F.cross_entropy(z, yb).backward()
            else:
                with torch.no_grad():
                    z = u.detach().mul(s)
                    z[torch.arange(a.batch), yb] -= s * m
                    grad = torch.softmax(z, dim=1)
                    grad[torch.arange(a.batch), yb] -= 1
                    grad.mul_(s / a.batch)
                u.backward(grad)
            opt.step()
            if step >= a.warmup:
                times.append(time.perf_counter() - t)
        times.sort()
        print(f"pytorch {torch.__version__} {version}: {1000 * times[len(times) // 2]:.1f} ms/step "
              f"({a.threads} thread{'s' if a.threads > 1 else ''}, {a.nbit} bits, {a.classes} classes, batch {a.batch})")


if __name__ == "__main__":
    main()
