#!/usr/bin/env python3
"""PyTorch reference for orthohash's image backbones, for side-by-side throughput figures.

Not part of the product: it needs torch (pip install "torch==2.13.0+cpu"). torchvision's wheel does
not load against the CPU torch here, so the backbones are written out in torchvision's layout
(the same nn.Sequential indices): AlexNet (features, avgpool 6x6, classifier[0:6]) or VGG-16
(configuration D), then the hash layer (Linear without bias + BatchNorm1d), the cosine-margin
OrthoHash loss against a Bernoulli codebook, and Adam with coupled weight decay (backbone lr
x 0.1), on random images: what `orthohash bench --backbone alexnet` times on generated images.

  python3 bench/pytorch_alexnet.py --threads 2 --steps 10 [--channels-last] [--backbone vgg16]
"""
import argparse, json, time
import torch
import torch.nn as nn
import torch.nn.functional as F


def alexnet():
    features = nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
    classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
                               nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True))
    return features, nn.AdaptiveAvgPool2d((6, 6)), classifier


def vgg16():
    layers, c = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                               nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5))
    return nn.Sequential(*layers), nn.AdaptiveAvgPool2d((7, 7)), classifier


class Net(nn.Module):
    def __init__(self, backbone, K, codebook):
        super().__init__()
        self.features, self.avgpool, self.classifier = alexnet() if backbone == "alexnet" else vgg16()
        self.hash_fc = nn.Sequential(nn.Linear(4096, K, bias=False), nn.BatchNorm1d(K))
        nn.init.normal_(self.hash_fc[0].weight, std=0.01)
        self.register_buffer("centroids", codebook)

    def forward(self, x):
        f = self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
        v = self.hash_fc(f)
        return F.normalize(v, dim=1) @ F.normalize(self.centroids, dim=1).t(), v


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", choices=["alexnet", "vgg16"], default="alexnet")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--nbit", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--channels-last", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    codebook = torch.bernoulli(torch.ones(a.classes, a.nbit) * 0.5) * 2 - 1
    model = Net(a.backbone, a.nbit, codebook)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    backbone = [q for n, q in model.named_parameters() if not n.startswith("hash_fc")]
    opt = torch.optim.Adam([{"params": backbone, "lr": 1e-5}, {"params": model.hash_fc.parameters()}], lr=1e-4, weight_decay=5e-4)
    B, s, m = a.batch_size, 8.0, 0.2
    x = torch.randn(B, 3, a.image_size, a.image_size).contiguous(memory_format=fmt)
    y = torch.randint(0, a.classes, (B,))
    model.train()

    def step():
        u, _ = model(x)
        loss = F.cross_entropy(s * (u - m * F.one_hot(y, a.classes).float()), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t
    print(json.dumps({"backbone": a.backbone, "channels_last": a.channels_last, "threads": a.threads, "batch": B,
                      "images_per_second": a.steps * B / dt, "ms_per_step": 1000 * dt / a.steps}))


if __name__ == "__main__":
    main()
