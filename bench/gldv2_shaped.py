#!/usr/bin/env python3
"""Generated data of GLDv2's shape, for scale tests of orthohash (needs numpy; not part of the product).

GLDv2-clean: ~1.58M training images of 81,313 landmarks with a long-tailed class size distribution,
2048-d L2-normalised DELG global descriptors. Here: class sizes from a Zipf-like law (at least 2 rows
per class), each row the unit-norm class centre plus Gaussian noise, renormalised, stored float16;
a query set (default 1,129 rows) and a database set drawn the same way from the same classes.

  python3 bench/gldv2_shaped.py --out /tmp/gld                # train_x.npy (6.5 GB), train_y.npy, query_*, db_*
  python3 bench/gldv2_shaped.py --out /tmp/gld --rows 100000  # smaller
"""
import argparse, os, time
import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=int, default=1_580_470)
    p.add_argument("--classes", type=int, default=81_313)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--queries", type=int, default=1_129)
    p.add_argument("--db", type=int, default=100_000)
    p.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the unit centre")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    r = np.random.default_rng(a.seed)
    t = time.time()
    # Long tail: sizes proportional to 1/(rank+10)^0.9, at least 2 per class, summing to --rows.
    w = 1.0 / (np.arange(a.classes) + 10.0) ** 0.9
    extra = a.rows - 2 * a.classes
    assert extra >= 0, "--rows must be at least twice --classes"
    sizes = 2 + np.floor(w / w.sum() * extra).astype(np.int64)
    sizes[: a.rows - sizes.sum()] += 1
    labels = np.repeat(np.arange(a.classes, dtype=np.int32), sizes)
    r.shuffle(labels)
    centres = r.standard_normal((a.classes, a.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = a.noise / np.sqrt(a.dim)

    def write(name, y):
        x = np.lib.format.open_memmap(f"{a.out}/{name}_x.npy", mode="w+", dtype=np.float16, shape=(len(y), a.dim))
        for s in range(0, len(y), 65536):
            yy = y[s:s + 65536]
            v = centres[yy] + sigma * r.standard_normal((len(yy), a.dim), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            x[s:s + len(yy)] = v.astype(np.float16)
        x.flush()
        np.save(f"{a.out}/{name}_y.npy", y)

    write("train", labels)
    # Queries and database from the classes with at least 5 training rows, by class frequency.
    pool = labels[np.isin(labels, np.nonzero(sizes >= 5)[0])]
    write("query", r.choice(pool, a.queries))
    write("db", r.choice(labels, a.db))
    print(f"{a.rows} rows, {a.classes} classes (sizes {sizes.min()}-{sizes.max()}, median {int(np.median(sizes))}), "
          f"{a.queries} queries, {a.db} database rows in {a.out} ({time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
