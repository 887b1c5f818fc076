#!/usr/bin/env python3
"""Generated data of GLDv2's shape, for scale tests of orthohash (needs numpy; not part of the product).

GLDv2-clean: ~1.58M training images of 81,313 landmarks with a long-tailed class size distribution,
2048-d L2-normalised DELG global descriptors. Here: class sizes from a Zipf-like law (at least 2 rows
per class), each row the unit-norm class centre plus Gaussian noise, renormalised, stored float16;
a query set (default 1,129 rows, GLDv2's scored test images) and an index (default 761,757 rows,
GLDv2's index) drawn the same way from the same classes.

For the official retrieval protocol (`orthohash map --solution`) it also writes ids files (one
16-hex-digit id per line, line i naming row i: query_ids.txt, db_ids.txt) and solution.csv in the
official layout (header id,images,Usage; the index ids of the query's class, space-separated;
Public for the first third, Private for the rest, as GLDv2 splits 379/750). A query whose class has
no index row is marked Ignored, as GLDv2 marks test images without a landmark of the index, and
--ignored more Ignored rows (ids without codes) stand for the rest of GLDv2's test set.

  python3 bench/gldv2_shaped.py --out /tmp/gld                # train_x.npy (6.5 GB), train_y.npy, query_*, db_* (3.1 GB), ids, solution
  python3 bench/gldv2_shaped.py --out /tmp/gld --rows 100000 --db 50000  # smaller
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
    p.add_argument("--db", type=int, default=761_757)
    p.add_argument("--ignored", type=int, default=1_000, help="extra Ignored rows in solution.csv")
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
    query_y, db_y = r.choice(pool, a.queries), r.choice(labels, a.db)
    write("query", query_y)
    write("db", db_y)
    # Ids unique over both splits and the extra Ignored rows, 16 hex digits as GLDv2's.
    ids = np.unique(r.integers(0, 2**63, a.queries + a.db + a.ignored + 1000, dtype=np.int64))
    r.shuffle(ids)
    assert len(ids) >= a.queries + a.db + a.ignored
    names = [f"{v:016x}" for v in ids[:a.queries + a.db + a.ignored]]
    query_ids, db_ids, extra = names[:a.queries], names[a.queries:a.queries + a.db], names[a.queries + a.db:]
    for name, rows in (("query_ids.txt", query_ids), ("db_ids.txt", db_ids)):
        with open(f"{a.out}/{name}", "w") as f:
            f.write("".join(i + "\n" for i in rows))
    order = np.argsort(db_y, kind="stable")
    starts = np.searchsorted(db_y[order], np.arange(a.classes + 1))
    public = a.queries // 3
    scored = 0
    with open(f"{a.out}/solution.csv", "w") as f:
        f.write("id,images,Usage\n")
        for q, c in enumerate(query_y):
            rows = order[starts[c]:starts[c + 1]]
            if len(rows) == 0:
                f.write(f"{query_ids[q]},,Ignored\n")
                continue
            scored += 1
            f.write(f"{query_ids[q]},{' '.join(db_ids[i] for i in rows)},{'Public' if q < public else 'Private'}\n")
        for i in extra:
            f.write(f"{i},,Ignored\n")
    print(f"{a.rows} rows, {a.classes} classes (sizes {sizes.min()}-{sizes.max()}, median {int(np.median(sizes))}), "
          f"{a.queries} queries ({scored} with index rows of their class), {a.db} index rows in {a.out} ({time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
