#!/usr/bin/env python3
"""What Pillow computes for the image pipeline, saved for orthohash's tests (FormatsTests'
ImageTests read Tests/Fixtures/images/). Not part of the product: it needs Pillow and numpy.
Made with Pillow 12.0 (Pillow 13 runs the vertical pass first for some shapes, which moves some
bytes by 1). Run once, and again only when the cases change:

  python3 bench/pil_transforms.py --out Tests/Fixtures/images

It writes small images of every kind the decoder converts (RGB JPEG, CMYK JPEG, grey JPEG, RGB,
grey, grey+alpha, RGBA and palette PNG) and expected.json: for each image the bytes of
Image.open(f).convert("RGB"), of resize((w, h), BILINEAR) to sizes that shrink and grow it, of a
crop then a resize (torchvision's resized crop), and of torchvision's test transform
(Resize(s) of the shorter side, then CenterCrop).
"""
import argparse, json, os
import numpy as np
from PIL import Image


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="Tests/Fixtures/images")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(7)

    def smooth(h, w, c):
        # Smooth colour fields with some noise (JPEG-like content) rather than pure noise.
        y, x = np.mgrid[0:h, 0:w]
        base = [128 + 100 * np.sin(x / (3 + k) + y / (5 + 2 * k) + k) for k in range(c)]
        return np.clip(np.dstack(base) + rng.normal(0, 12, (h, w, c)), 0, 255).astype(np.uint8)

    files = {}
    files["rgb.jpg"] = lambda f: Image.fromarray(smooth(37, 53, 3)).save(f, quality=92)
    files["cmyk.jpg"] = lambda f: Image.fromarray(smooth(29, 41, 4), mode="CMYK").save(f, quality=90)
    files["grey.jpg"] = lambda f: Image.fromarray(smooth(31, 26, 1)[:, :, 0]).save(f, quality=90)
    files["rgb.png"] = lambda f: Image.fromarray(smooth(23, 47, 3)).save(f)
    files["grey.png"] = lambda f: Image.fromarray(smooth(40, 19, 1)[:, :, 0]).save(f)
    files["greyalpha.png"] = lambda f: Image.fromarray(smooth(17, 22, 2), mode="LA").save(f)
    files["rgba.png"] = lambda f: Image.fromarray(smooth(26, 33, 4), mode="RGBA").save(f)
    files["palette.png"] = lambda f: Image.fromarray(smooth(21, 28, 3)).convert("P", palette=Image.ADAPTIVE, colors=16).save(f)
    expected = {}
    for name, write in files.items():
        path = os.path.join(a.out, name)
        write(path)
        im = Image.open(path).convert("RGB")
        w, h = im.size
        e = dict(width=w, height=h, rgb=list(im.tobytes()), resized=[], crops=[], test=[])
        for (ow, oh) in [(w // 3, h // 2), (2 * w + 1, h + 3), (w, h // 4 + 1), (max(1, w - 1), 2 * h)]:
            e["resized"].append(dict(width=ow, height=oh, rgb=list(im.resize((ow, oh), Image.BILINEAR).tobytes())))
        for (x, y, cw, ch, s) in [(3, 2, w - 7, h - 5, 16), (1, 4, w // 2, h // 2, 19)]:
            out = im.crop((x, y, x + cw, y + ch)).resize((s, s), Image.BILINEAR)
            e["crops"].append(dict(x=x, y=y, width=cw, height=ch, size=s, rgb=list(out.tobytes())))
        for (resize, size) in [(20, 16), (24, 17)]:
            # torchvision: Resize(int) on the shorter side, then CenterCrop with round-half-even offsets.
            if w <= h:
                rw, rh = resize, int(resize * h / w)
            else:
                rw, rh = int(resize * w / h), resize
            r = im.resize((rw, rh), Image.BILINEAR)
            top, left = int(round((rh - size) / 2.0)), int(round((rw - size) / 2.0))
            e["test"].append(dict(resize=resize, size=size, rgb=list(r.crop((left, top, left + size, top + size)).tobytes())))
        expected[name] = e
    with open(os.path.join(a.out, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
    print(f"{len(files)} images -> {a.out}")


if __name__ == "__main__":
    main()
