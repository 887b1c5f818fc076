#!/usr/bin/env python3
"""Converts the DELG embedding files of cisip-FIRe (the data of the OrthoHash paper's GLDv2 and
ROxford/RParis experiments: data/gldv2delgembed, data/roxford5kdelgembed, data/rparis6kdelgembed)
into the files orthohash reads. Needs torch and numpy; not part of the product.

Each split file (train.txt, test.txt, database.txt; whichever exist) is a torch.save dictionary:
'codes' the (N, 2048) descriptors, 'id' the N image ids, and in train.txt 'labels' the 1-based
landmark classes. Written to OUT:

  train_x.npy, train_y.npy    descriptors (float16 by default) and 0-based classes (int32)
  query_x.npy, query_ids.txt  test.txt: the queries and their ids, one per line (line i = row i)
  db_x.npy, db_ids.txt        database.txt: the index

and, when the folder has FIRe's ground_truth.csv (GLDv2: id = a test image, images = the index
images of its landmark, space-separated), solution.csv in the official layout (id,images,Usage).
When that CSV has a Usage column it is kept; when it has none every row is written Public, so
`orthohash map` reports the split "All" (= Public) and an empty Private (--solution from the
official retrieval_solution_v2.1.csv instead gives the real split). ROxford/RParis need their
revisitop ground truth besides (bench/revisitop_gnd_to_json.py).

  python3 bench/fire_delg_to_npy.py data/gldv2delgembed /data/gld
  python3 bench/fire_delg_to_npy.py data/roxford5kdelgembed /data/roxf --dtype float32
"""
import argparse
import csv
import os
import sys

SPLITS = (("train.txt", "train"), ("test.txt", "query"), ("database.txt", "db"))


def fail(path, message):
    sys.exit(f"error: {path}: {message}")


def ids_of(path, value, n):
    """The ids as strings: a list or array of str/bytes/ints, or an integer tensor."""
    try:
        import torch
        if isinstance(value, torch.Tensor):
            value = value.tolist()
    except ImportError:
        pass
    out = []
    for v in list(value):
        if isinstance(v, bytes):
            v = v.decode()
        s = str(v.item() if hasattr(v, "item") else v)
        if s == "" or s.strip() != s or "\n" in s or "," in s or " " in s:
            fail(path, f"id {s!r} is empty or has spaces, commas or line ends")
        out.append(s)
    if len(out) != n:
        fail(path, f"{len(out)} ids for {n} rows of codes")
    return out


def convert(folder, out, dtype):
    import numpy as np
    import torch
    os.makedirs(out, exist_ok=True)
    found = False
    for name, stem in SPLITS:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        found = True
        try:
            d = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a torch or pickle error: one line, naming the file
            fail(path, f"not a torch.save file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        if not isinstance(d, dict) or "codes" not in d:
            fail(path, "expected a dictionary with 'codes' (and 'id', and 'labels' for train.txt)")
        codes = d["codes"]
        codes = codes.numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] == 0:
            fail(path, f"'codes' has shape {tuple(codes.shape)}, expected (rows, dim)")
        if not np.isfinite(codes).all():
            fail(path, "'codes' has non-finite values")
        n = codes.shape[0]
        np.save(os.path.join(out, f"{stem}_x.npy"), codes.astype(dtype))
        if stem == "train":
            if "labels" not in d:
                fail(path, "train.txt has no 'labels'")
            y = d["labels"]
            y = (y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)).reshape(-1)
            if len(y) != n:
                fail(path, f"{len(y)} labels for {n} rows of codes")
            if y.min() < 1:
                fail(path, f"labels are 1-based in FIRe's files; found {y.min()}")
            np.save(os.path.join(out, "train_y.npy"), (y - 1).astype(np.int32))
            print(f"{path}: {n} rows of {codes.shape[1]}, {len(np.unique(y))} classes -> {stem}_x.npy, train_y.npy")
        else:
            if "id" not in d:
                fail(path, "no 'id' (the image ids)")
            ids = ids_of(path, d["id"], n)
            if len(set(ids)) != n and stem == "query":
                fail(path, "a query id names two rows")
            with open(os.path.join(out, f"{stem}_ids.txt"), "w") as f:
                f.write("".join(i + "\n" for i in ids))
            print(f"{path}: {n} rows of {codes.shape[1]} -> {stem}_x.npy, {stem}_ids.txt")
    if not found:
        fail(folder, "none of train.txt, test.txt, database.txt is here")
    gt = os.path.join(folder, "ground_truth.csv")
    if os.path.exists(gt):
        with open(gt, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "id" not in rows[0] or "images" not in rows[0]:
            fail(gt, "expected the columns id and images")
        usage = "Usage" in rows[0]
        with open(os.path.join(out, "solution.csv"), "w") as f:
            f.write("id,images,Usage\n")
            for r in rows:
                f.write(f"{r['id']},{' '.join(str(r['images'] or '').split())},{r['Usage'] if usage else 'Public'}\n")
        print(f"{gt}: {len(rows)} rows -> solution.csv" + ("" if usage else " (no Usage column: every row Public)"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="a FIRe data folder (train.txt, test.txt, database.txt, ground_truth.csv)")
    p.add_argument("out", help="the folder to write")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    a = p.parse_args()
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        sys.exit(f"error: fire_delg_to_npy.py needs {e.name} (pip install torch numpy)")
    convert(a.folder, a.out, a.dtype)


if __name__ == "__main__":
    main()
