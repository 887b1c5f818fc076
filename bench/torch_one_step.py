#!/usr/bin/env python3
"""One training step of the PyTorch reference, saved tensor by tensor for orthohash's tests.

Not part of the product: it needs torch (pip install "torch==2.13.0+cpu"). Run once, and again
only when the cases change:

  python3 bench/torch_one_step.py --out Tests/Fixtures/torch_one_step.json

For each case it builds the model of the authors' code (backbone: an MLP or orthohash's cnn, Linear without bias +
BatchNorm1d, cosine to a fixed +-1 codebook), draws the inputs, targets and parameters from a
seed, and runs one step: forward in training mode, the authors' OrthoHashLoss (cosine or arc
margin; cross-entropy, label smoothing, BCE or the imbalance loss; an optional quantization
term), backward, and one optimizer step (Adam or SGD, coupled weight decay, the backbone's
learning rate scaled). It writes the inputs, the parameters before, and the loss, accuracy,
codes, BatchNorm running statistics, every gradient and every parameter after the step, all as
float32 values written exactly (Tests/NumericsTests/TorchStepTests.swift reads them, in the
manner of llm.c's test_gpt2.c).
"""
import argparse, json
import torch
import torch.nn.functional as F
from orthohash_torch import Model

CASES = [
    dict(name="mlp cos margin, cross-entropy, Adam", D=12, hidden=[10, 8], K=6, C=5, B=16, multi=None,
         loss=dict(scale=8.0, margin=0.2, margin_type="cos", quan=0.0, quan_type="cs", ce=1.0),
         optimizer=dict(kind="adam", lr=1e-3, backbone_lr_scale=0.1, weight_decay=5e-4, betas=[0.9, 0.999], eps=1e-8), seed=1),
    dict(name="linear, 300 classes (the many-classes kernel), Adam", D=16, hidden=[], K=8, C=300, B=12, multi=None,
         loss=dict(scale=8.0, margin=0.2, margin_type="cos", quan=0.0, quan_type="cs", ce=1.0),
         optimizer=dict(kind="adam", lr=1e-3, backbone_lr_scale=0.1, weight_decay=5e-4, betas=[0.9, 0.999], eps=1e-8), seed=2),
    dict(name="mlp arc margin, label smoothing, cs quantization, SGD Nesterov", D=12, hidden=[10], K=6, C=5, B=16, multi="smooth",
         loss=dict(scale=4.0, margin=0.3, margin_type="arc", quan=0.5, quan_type="cs", ce=0.7),
         optimizer=dict(kind="sgd", lr=0.05, backbone_lr_scale=0.5, weight_decay=5e-4, momentum=0.9, nesterov=True), seed=3),
    dict(name="linear cos margin, BCE, l2 quantization, Adam", D=10, hidden=[], K=6, C=5, B=8, multi="bce",
         loss=dict(scale=8.0, margin=0.2, margin_type="cos", quan=0.3, quan_type="l2", ce=1.0),
         optimizer=dict(kind="adam", lr=1e-3, backbone_lr_scale=0.1, weight_decay=5e-4, betas=[0.9, 0.999], eps=1e-8), seed=4),
    dict(name="mlp cos margin, imbalance, l1 quantization, SGD", D=10, hidden=[7], K=6, C=5, B=8, multi="imbalance",
         loss=dict(scale=8.0, margin=0.2, margin_type="cos", quan=0.2, quan_type="l1", ce=1.0),
         optimizer=dict(kind="sgd", lr=0.05, backbone_lr_scale=0.1, weight_decay=5e-4, momentum=0.9, nesterov=False), seed=5),
    dict(name="cnn on 2x8x8 images, cos margin, cross-entropy, Adam", D=128, image=[2, 8, 8], hidden=[4, 6, 16], K=6, C=5, B=8, multi=None,
         loss=dict(scale=8.0, margin=0.2, margin_type="cos", quan=0.0, quan_type="cs", ce=1.0),
         optimizer=dict(kind="adam", lr=1e-3, backbone_lr_scale=0.1, weight_decay=5e-4, betas=[0.9, 0.999], eps=1e-8), seed=6),
    dict(name="cnn on 3x9x7 images (pools that drop a row), arc margin, label smoothing, SGD", D=189, image=[3, 9, 7], hidden=[5, 4, 12], K=8,
         C=6, B=10, multi="smooth", loss=dict(scale=4.0, margin=0.3, margin_type="arc", quan=0.2, quan_type="cs", ce=1.0),
         optimizer=dict(kind="sgd", lr=0.05, backbone_lr_scale=0.5, weight_decay=5e-4, momentum=0.9, nesterov=False), seed=7),
]


def orthohash_loss(u, v, y, multi, s, m, margin_type, ce, quan, quan_type):
    """The authors' OrthoHashLoss; `y` is class indices (single-label) or multi-hot floats."""
    onehot = y if multi else F.one_hot(y, u.shape[1]).float()
    if margin_type == "cos":
        z = s * (u - m * onehot)
    else:
        z = s * torch.cos(torch.acos(u.clamp(-0.99999, 0.99999)) + m * onehot)
    if not multi:
        loss_ce = F.cross_entropy(z, y)
    elif multi == "smooth":
        loss_ce = -(y / y.sum(1, keepdim=True) * F.log_softmax(z, dim=1)).sum(1).mean()
    elif multi == "bce":
        loss_ce = F.binary_cross_entropy_with_logits(z, y)
    else:  # imbalance: constant weights 1/C, 1 where y = 1 or where (sigmoid(z) >= 0.7) != (y = 1)
        with torch.no_grad():
            positive = y == 1
            w = torch.where(positive | ((torch.sigmoid(z) >= 0.7) != positive), 1.0, 1.0 / u.shape[1])
        loss_ce = (w * F.binary_cross_entropy_with_logits(z, y, reduction="none")).sum() / (w.sum() + 1e-7)
    loss = ce * loss_ce
    if quan != 0:
        b = v.detach().sign()
        if quan_type == "cs":
            q = 1 - F.cosine_similarity(v, b, dim=1)
        elif quan_type == "l1":
            q = (v - b).abs()
        else:
            q = (v - b).pow(2)
        loss = loss + quan * q.mean()
    return loss


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def run(case):
    torch.manual_seed(case["seed"])
    D, K, C, B = case["D"], case["K"], case["C"], case["B"]
    codebook = torch.bernoulli(torch.ones(C, K) * 0.5) * 2 - 1
    model = Model(D, case["hidden"], K, codebook, image=case.get("image"))
    # Larger hash weights than N(0, 0.01^2), so that every term of the step is well above rounding.
    with torch.no_grad():
        model.hash_fc[0].weight.mul_(30)
    x = torch.randn(B, D)
    if case["multi"]:
        y = (torch.rand(B, C) < 0.35).float()
        y[torch.arange(B), torch.randint(0, C, (B,))] = 1     # every row has a positive label
    else:
        y = torch.randint(0, C, (B,))
    before = {n: flat(p) for n, p in model.named()}
    L, o = case["loss"], case["optimizer"]
    backbone = model.backbone_parameters()
    head = [p for n, p in model.named() if n.startswith("hash_fc")]
    groups = ([{"params": backbone, "lr": o["lr"] * o["backbone_lr_scale"]}] if backbone else []) + [{"params": head, "lr": o["lr"]}]
    if o["kind"] == "adam":
        opt = torch.optim.Adam(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"])
    else:
        opt = torch.optim.SGD(groups, lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"], weight_decay=o["weight_decay"])
    model.train()
    u, v = model(x)
    loss = orthohash_loss(u, v, y, case["multi"], L["scale"], L["margin"], L["margin_type"], L["ce"], L["quan"], L["quan_type"])
    best = u.argmax(1)
    correct = int((y[torch.arange(B), best] > 0).sum()) if case["multi"] else int((best == y).sum())
    opt.zero_grad()
    loss.backward()
    gradients = {n: flat(p.grad) for n, p in model.named()}
    opt.step()
    bn = model.hash_fc[1]
    return dict(case, x=flat(x), labels=flat(y) if case["multi"] else [int(t) for t in y.tolist()],
                codebook=[int(c) for c in codebook.reshape(-1).tolist()], parameters=before, loss_value=float(loss.detach()), correct=correct,
                codes=flat(v), running_mean=flat(bn.running_mean), running_var=flat(bn.running_var), gradients=gradients,
                after={n: flat(p) for n, p in model.named()})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="Tests/Fixtures/torch_one_step.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    out = dict(torch=torch.__version__, cases=[run(c) for c in CASES])
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"{len(CASES)} cases from torch {torch.__version__} -> {a.out}")


if __name__ == "__main__":
    main()
