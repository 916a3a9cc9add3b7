#!/usr/bin/env python3
"""Per-forward oneDNN time by primitive, implementation and shape, from the
ONEDNN_VERBOSE logs bench/device/diagnose.sh writes (tessera_vit_bench runs
warm-up + timed iterations + one check pass, so `--forwards` defaults to
1 + 3 + 1 = 5; weight reorders at load are divided too and show as such).

  python3 bench/device/verbose_summary.py [--forwards 5] LOG...
"""
import argparse
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--forwards", type=float, default=5)
    ap.add_argument("logs", nargs="+")
    a = ap.parse_args()
    for path in a.logs:
        total, calls, isa = defaultdict(float), defaultdict(int), ""
        for line in open(path, errors="replace"):
            f = line.rstrip("\n").split(",")
            if len(f) > 3 and f[0] == "onednn_verbose" and f[1] == "info" and f[3].startswith("isa:"):
                isa = f[3][4:]
            if len(f) < 6 or f[0] != "onednn_verbose" or f[1] != "exec":
                continue
            key = f"{f[3]:<8} {f[4]:<28} {f[-2]}"
            total[key] += float(f[-1])
            calls[key] += 1
        print(f"== {path}: {isa}")
        for key, ms in sorted(total.items(), key=lambda kv: -kv[1]):
            print(f"{ms / a.forwards:9.3f} ms {calls[key] / a.forwards:6.1f} calls  {key}")
        print(f"{sum(total.values()) / a.forwards:9.3f} ms per forward in oneDNN")


if __name__ == "__main__":
    main()
