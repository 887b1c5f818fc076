#!/usr/bin/env python3
"""Converts a torchvision state dict (.pth: AlexNet or VGG-16, e.g. ImageNet weights) to the
safetensors file `orthohash train --pretrained` reads: the backbone's tensors under torchvision's
names (features.N.weight, classifier.N.bias, ...), float32. Needs torch only (torchvision is not
needed; its PyPI wheel does not load against the CPU torch here).

  python3 bench/torchvision_to_safetensors.py alexnet-owt-7be5be79.pth alexnet.safetensors

The ImageNet classifier (classifier.6.*) is dropped: orthohash's backbones end at fc7. With
--check-random-alexnet DIR instead of files it makes a random AlexNet in torchvision's layout,
saves its state dict, converts it, and writes an input and the network's fc7 features for it
(DIR/x.npy, DIR/features.npy; --image-size, default 63), which orthohash's tests compare with
what the converted weights give there.
"""
import argparse, json, os, struct, sys
import numpy as np
import torch


def convert(state, out):
    tensors = {k: v for k, v in state.items() if (k.startswith("features.") or k.startswith("classifier.")) and not k.startswith("classifier.6.")}
    if not tensors:
        sys.exit(f"error: no features.* or classifier.* tensors in the state dict (keys: {', '.join(list(state)[:5])}...)")
    header, offset, blobs = {"__metadata__": {"format": "pt", "source": "torchvision"}}, 0, []
    for name in sorted(tensors, key=lambda n: (n.split(".")[0], int(n.split(".")[1]), n)):
        a = tensors[name].detach().cpu().float().contiguous().numpy().astype("<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for b in blobs:
            f.write(b)
    os.replace(tmp, out)
    return len(tensors)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("pth", nargs="?")
    p.add_argument("out", nargs="?")
    p.add_argument("--check-random-alexnet", metavar="DIR")
    p.add_argument("--image-size", type=int, default=63)
    a = p.parse_args()
    if a.check_random_alexnet:
        sys.path.insert(0, os.path.dirname(__file__))
        from pytorch_alexnet import alexnet
        d = a.check_random_alexnet
        torch.manual_seed(0)
        features, avgpool, classifier = alexnet()
        net = torch.nn.ModuleDict({"features": features, "avgpool": avgpool, "classifier": classifier}).eval()
        state = {k: v for k, v in net.state_dict().items()}
        state["classifier.6.weight"] = torch.randn(1000, 4096)        # torchvision's ImageNet classifier, dropped
        state["classifier.6.bias"] = torch.randn(1000)
        torch.save(state, f"{d}/alexnet.pth")
        n = convert(torch.load(f"{d}/alexnet.pth"), f"{d}/alexnet.safetensors")
        x = torch.randn(2, 3, a.image_size, a.image_size)
        with torch.no_grad():
            f = net["classifier"](torch.flatten(net["avgpool"](net["features"](x)), 1))
        np.save(f"{d}/x.npy", x.numpy().reshape(2, -1))
        np.save(f"{d}/features.npy", f.numpy())
        print(f"{n} tensors -> {d}/alexnet.safetensors")
        return
    if not a.pth or not a.out:
        p.error("give a .pth state dict and the output .safetensors file")
    state = torch.load(a.pth, map_location="cpu")
    if "state_dict" in state:
        state = state["state_dict"]
    print(f"{convert(state, a.out)} tensors -> {a.out}")


if __name__ == "__main__":
    main()
