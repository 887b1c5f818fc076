"""The authors' OrthoHash model in PyTorch, shared by the reference scripts in bench/ (which need
torch; orthohash does not)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    """Backbone, hash_fc = Linear(no bias) + BatchNorm1d, and the cosine of the codes to the fixed
    codebook's rows. The backbone is Linear + ReLU per hidden width (`image` None: rows are
    feature vectors), or with `image` = (C, H, W) orthohash's cnn: features (conv C->hidden[0]
    5x5 pad 2, ReLU, max-pool 2, conv ->hidden[1] 5x5 pad 2, ReLU, max-pool 2), flattened, then
    fc (Linear ->hidden[2], ReLU)."""

    def __init__(self, D, hidden, K, codebook, image=None, channels_last=False):
        super().__init__()
        self.image = image
        self.channels_last = channels_last
        if image is None:
            layers, d = [], D
            for h in hidden:
                layers += [nn.Linear(d, h), nn.ReLU()]
                d = h
            self.backbone = nn.Sequential(*layers)
        else:
            c, h, w = image
            self.features = nn.Sequential(nn.Conv2d(c, hidden[0], 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(hidden[0], hidden[1], 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
            self.fc = nn.Sequential(nn.Linear(hidden[1] * (h // 2 // 2) * (w // 2 // 2), hidden[2]), nn.ReLU())
            d = hidden[2]
        self.hash_fc = nn.Sequential(nn.Linear(d, K, bias=False), nn.BatchNorm1d(K))
        nn.init.normal_(self.hash_fc[0].weight, std=0.01)
        self.register_buffer("centroids", codebook)

    def features_of(self, x):
        if self.image is None:
            return self.backbone(x)
        x = x.view(x.shape[0], *self.image)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.fc(torch.flatten(self.features(x), 1))

    def forward(self, x):
        v = self.hash_fc(self.features_of(x))
        u = F.normalize(v, dim=1) @ F.normalize(self.centroids, dim=1).t()
        return u, v

    def named(self):
        """Parameters under orthohash's layout names, in its order."""
        out, i = [], 0
        if self.image is None:
            for layer in self.backbone:
                if isinstance(layer, nn.Linear):
                    out += [(f"backbone.fc.{i}.weight", layer.weight), (f"backbone.fc.{i}.bias", layer.bias)]
                    i += 1
        else:
            out += [(f"features.{i}.{n}", getattr(self.features[i], n)) for i in (0, 3) for n in ("weight", "bias")]
            out += [("fc.0.weight", self.fc[0].weight), ("fc.0.bias", self.fc[0].bias)]
        return out + [("hash_fc.0.weight", self.hash_fc[0].weight), ("hash_fc.1.weight", self.hash_fc[1].weight),
                      ("hash_fc.1.bias", self.hash_fc[1].bias)]

    def backbone_parameters(self):
        return [p for n, p in self.named() if not n.startswith("hash_fc")]
