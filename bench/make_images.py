#!/usr/bin/env python3
"""Writes JPEG images of a few classes and the authors' list files, for runs and benchmarks of
`--dataset images` where no image dataset is at hand (generated data, not ImageNet). Needs Pillow
and numpy (pip install pillow numpy), not part of the product.

  python3 bench/make_images.py --out /tmp/imgs --classes 10 --train 1000 --query 200 --db 1000

Class c's images share a colour gradient and a pattern of stripes at an angle of its own, under
noise, at sizes of 300-500 x 250-400 pixels (ImageNet's are about 400 x 350 on average), so a
backbone has something to learn. Writes DIR/images/*.jpg and DIR/train.txt, query.txt, db.txt
(the database and training images are disjoint), one `images/NAME.jpg CLASS` line each.
"""
import argparse, os
import numpy as np
from PIL import Image


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--query", type=int, default=200)
    p.add_argument("--db", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=90)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    os.makedirs(f"{a.out}/images", exist_ok=True)
    colours = rng.uniform(40, 215, (a.classes, 2, 3))
    angles = rng.uniform(0, np.pi, a.classes)
    n = 0
    for split, count in [("train", a.train), ("query", a.query), ("db", a.db)]:
        lines = []
        for i in range(count):
            c = i % a.classes
            w, h = int(rng.integers(300, 501)), int(rng.integers(250, 401))
            y, x = np.mgrid[0:h, 0:w].astype(np.float32)
            t = (x * np.cos(angles[c]) + y * np.sin(angles[c])) / max(w, h)
            mix = (0.5 + 0.5 * np.sin(2 * np.pi * 6 * t))[..., None]
            img = colours[c, 0] * mix + colours[c, 1] * (1 - mix) + rng.normal(0, 25, (h, w, 3))
            name = f"images/{split}{i:06d}.jpg"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f"{a.out}/{name}", quality=a.quality)
            lines.append(f"{name} {c}")
            n += 1
        with open(f"{a.out}/{split}.txt", "w") as f:
            f.write("\n".join(lines) + "\n")
    print(f"{n} images of {a.classes} classes -> {a.out} (train.txt, query.txt, db.txt)")


if __name__ == "__main__":
    main()
