#!/usr/bin/env python3
"""Converts revisitop's ground truth (gnd_roxford5k.pkl, gnd_rparis6k.pkl: a dict whose 'gnd' is
one {'easy', 'hard', 'junk', 'bbx'} dict per query, 0-based rows of 'imlist') into the JSON that
`orthohash revisited --ground-truth` reads: a list of {"easy": [...], "hard": [...], "junk": [...]}.

  python3 bench/revisitop_gnd_to_json.py gnd_roxford5k.pkl roxford5k.json

The query and database feature files must follow the pickle's 'qimlist' and 'imlist' order.
"""
import json
import pickle
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: revisitop_gnd_to_json.py GND.pkl OUT.json")
    with open(sys.argv[1], "rb") as f:
        cfg = pickle.load(f)
    gnd = [{k: [int(i) for i in g[k]] for k in ("easy", "hard", "junk")} for g in cfg["gnd"]]
    with open(sys.argv[2], "w") as f:
        json.dump(gnd, f)
    print(f"{len(gnd)} queries, {len(cfg['imlist'])} database images -> {sys.argv[2]}")


if __name__ == "__main__":
    main()
