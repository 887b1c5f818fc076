#!/usr/bin/env python3
"""PyTorch reference for the Fashion-MNIST configuration of orthohash, for side-by-side figures.

Not part of the product: it needs torch (pip install "torch==2.13.0+cpu"), which orthohash does not.
Same model (MLP 784-1024-1024, or with --backbone cnn orthohash's cnn over the 28x28 images,
+ Linear(no bias) + BatchNorm1d, cosine margin loss against a Bernoulli codebook), optimiser (Adam, coupled weight decay 5e-4, backbone lr x0.1), schedule
(StepLR int(0.8 epochs)), batch 256 with the last partial batch dropped, and the same mAP
(Hamming ranking, ties by database index).

  python3 bench/pytorch_fmnist.py --threads 2 --bench-steps 100       # samples/s only
  python3 bench/pytorch_fmnist.py --threads 2 --epochs 10             # train + mAP
  python3 bench/pytorch_fmnist.py --backbone cnn --channels-last --threads 2 --bench-steps 30
"""
import argparse, gzip, json, time
import numpy as np
import torch
import torch.nn.functional as F
from orthohash_torch import Model

D = "/usr/share/datasets/fashion-mnist"


def load(prefix):
    with gzip.open(f"{D}/{prefix}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32)
    with gzip.open(f"{D}/{prefix}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return torch.from_numpy((x / 255.0 - 0.2860) / 0.3530), torch.from_numpy(y)


def mean_ap(qb, qy, db, dy, R):
    nbit = qb.shape[1]
    aps = []
    idx = torch.arange(db.shape[0])
    for i in range(0, qb.shape[0], 500):
        d = 0.5 * (nbit - qb[i:i + 500] @ db.t())                     # Hamming distances
        key = d * db.shape[0] + idx                                      # ties by database index
        order = key.argsort(dim=1)[:, :R]
        rel = (dy[order] == qy[i:i + 500, None]).float()
        cum = rel.cumsum(1)
        prec = cum / torch.arange(1, R + 1)
        n = rel.sum(1)
        aps.append(torch.where(n > 0, (prec * rel).sum(1) / n.clamp(min=1), torch.zeros_like(n)))
    return torch.cat(aps).mean().item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--nbit", type=int, default=64)
    p.add_argument("--backbone", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--channels-last", action="store_true", help="cnn: NHWC tensors (oneDNN's faster layout on CPUs)")
    p.add_argument("--backbone-lr-scale", type=float, default=0.1)
    p.add_argument("--bench-steps", type=int, default=0, help="only time this many steps (after 5 warm-up steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="print the mean loss of every epoch")
    p.add_argument("--codebook-file", help="use this (C, K) +-1 codebook (.npy) instead of the seed's draw")
    p.add_argument("--save-codebook", help="write the codebook used to this .npy file (int8)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    # As in the authors' training script: the codebook is the first draw after seeding (and so
    # the same as `orthohash codebook --seed S`), then the model's initial weights.
    codebook = torch.bernoulli(torch.ones(10, a.nbit) * 0.5) * 2 - 1
    if a.codebook_file:
        codebook = torch.from_numpy(np.load(a.codebook_file).astype(np.float32))
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    if a.backbone == "cnn":
        model = Model(784, [32, 64, 1024], a.nbit, codebook, image=(1, 28, 28), channels_last=a.channels_last)
        if a.channels_last:
            model = model.to(memory_format=torch.channels_last)
    else:
        model = Model(784, [1024, 1024], a.nbit, codebook)
    s, m = 8.0, 0.2
    if a.save_codebook:
        np.save(a.save_codebook, model.centroids.numpy().astype(np.int8))
    lr = 1e-4
    opt = torch.optim.Adam([{"params": model.backbone_parameters(), "lr": lr * a.backbone_lr_scale},
                            {"params": model.hash_fc.parameters()}], lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(0.8 * a.epochs)), gamma=0.1)
    B = 256

    def step(idx):
        x, y = xtr[idx], ytr[idx]
        u, _ = model(x)
        z = s * (u - m * F.one_hot(y, 10).float())
        loss = F.cross_entropy(z, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    model.train()
    if a.bench_steps:
        perm = torch.randperm(xtr.shape[0])
        for i in range(5):
            step(perm[i * B:(i + 1) * B])
        t = time.perf_counter()
        for i in range(5, 5 + a.bench_steps):
            step(perm[i * B:(i + 1) * B])
        dt = time.perf_counter() - t
        print(json.dumps({"backbone": a.backbone, "channels_last": a.channels_last, "threads": a.threads, "samples_per_second": a.bench_steps * B / dt, "ms_per_step": 1000 * dt / a.bench_steps}))
        return
    seconds = 0.0
    for epoch in range(a.epochs):
        perm = torch.randperm(xtr.shape[0])
        t = time.perf_counter()
        total = 0.0
        for i in range(xtr.shape[0] // B):
            total += step(perm[i * B:(i + 1) * B]).item()
        seconds += time.perf_counter() - t
        if a.verbose:
            print(f"epoch {epoch + 1} loss {total / (xtr.shape[0] // B):.4f} lr {opt.param_groups[1]['lr']:.1e}", flush=True)
        sched.step()
    model.eval()
    with torch.no_grad():
        def codes(x):
            return torch.sign(torch.cat([model(x[i:i + 1000])[1] for i in range(0, x.shape[0], 1000)]))
        qb = codes(xte); db = codes(xtr)
    qb[qb == 0] = -1; db[db == 0] = -1
    print(json.dumps({"map_all": mean_ap(qb, yte, db, ytr, db.shape[0]), "map_1000": mean_ap(qb, yte, db, ytr, 1000),
                      "samples_per_second": a.epochs * (xtr.shape[0] // B) * B / seconds, "nbit": a.nbit}))


if __name__ == "__main__":
    main()
