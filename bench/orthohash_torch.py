"""The authors' OrthoHash model in PyTorch, shared by the reference scripts in bench/ (which need
torch; orthohash does not)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    """Backbone (Linear + ReLU per hidden width), hash_fc = Linear(no bias) + BatchNorm1d, and the
    cosine of the codes to the fixed codebook's rows."""

    def __init__(self, D, hidden, K, codebook):
        super().__init__()
        layers, d = [], D
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.backbone = nn.Sequential(*layers)
        self.hash_fc = nn.Sequential(nn.Linear(d, K, bias=False), nn.BatchNorm1d(K))
        nn.init.normal_(self.hash_fc[0].weight, std=0.01)
        self.register_buffer("centroids", codebook)

    def forward(self, x):
        v = self.hash_fc(self.backbone(x))
        u = F.normalize(v, dim=1) @ F.normalize(self.centroids, dim=1).t()
        return u, v

    def named(self):
        """Parameters under orthohash's layout names, in its order."""
        out, i = [], 0
        for layer in self.backbone:
            if isinstance(layer, nn.Linear):
                out += [(f"backbone.fc.{i}.weight", layer.weight), (f"backbone.fc.{i}.bias", layer.bias)]
                i += 1
        return out + [("hash_fc.0.weight", self.hash_fc[0].weight), ("hash_fc.1.weight", self.hash_fc[1].weight),
                      ("hash_fc.1.bias", self.hash_fc[1].bias)]
