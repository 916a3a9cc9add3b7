#!/usr/bin/env python3
"""Tables from bench/device/run.sh's results.jsonl: per model, the median
over rounds of each engine's p50 latency, its spread, and the ratios to ONNX
Runtime fp32 measured in the same rounds; then the linear-layer rates.

  python3 bench/device/summarize.py DIR/results.jsonl
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from paired import TABLE_HEAD, table_rows  # noqa: E402  (bench/paired.py)


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    errors = [r for r in rows if "error" in r]
    for r in errors:
        print(f"error: {r['model']} {r['engine']} {r['dtype']}: {r['error'][-300:]}")
    timed = [r for r in rows if "result" in r and r["model"] in ("tiny", "small") and r["engine"] != "paired"]
    print("| model | engine | dtype | linear layers | max logit diff vs f32 packed (relative) | p50 ms, median of rounds (min-max) "
          "| / ORT fp32 | / ORT fp32 in the same round: median (min-max) |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for model in sorted({r["model"] for r in timed}, key=["tiny", "small"].index):
        by, info, per_round = {}, {}, {}
        for r in timed:
            if r["model"] == model:
                by.setdefault((r["engine"], r["dtype"]), []).append(r["result"]["ms_p50"])
                info[(r["engine"], r["dtype"])] = r["result"]
                per_round[(r["round"], r["engine"], r["dtype"])] = r["result"]["ms_p50"]
        ort = statistics.median(by[("onnxruntime", "f32")]) if ("onnxruntime", "f32") in by else None
        for (engine, dtype), v in sorted(by.items()):
            med = statistics.median(v)
            ratio = f"{med / ort:.2f}x" if ort else "-"
            res = info[(engine, dtype)]
            check = f"{res['check']:.2g}" if "check" in res else "-"
            rounds = sorted(per_round[k] / per_round[(k[0], "onnxruntime", "f32")] for k in per_round
                            if k[1:] == (engine, dtype) and (k[0], "onnxruntime", "f32") in per_round)
            paired = f"{statistics.median(rounds):.2f}x ({rounds[0]:.2f}-{rounds[-1]:.2f})" if rounds else "-"
            print(f"| ViT-{model.capitalize()}/16 | {engine} | {dtype} | {res.get('linear', '-')} | {check} | "
                  f"{med:.2f} ({min(v):.2f}-{max(v):.2f}) | {ratio} | {paired} |")
    paired_table(rows)
    throughput(rows)
    peak = next((r["result"] for r in rows if r["model"] == "peak" and "result" in r), None)
    if peak:
        print(f"\nf32 multiply-add peak, {peak['bits']}-bit vectors: {peak['gflops_one_thread']:.1f} GFLOP/s on one "
              f"thread, {peak['gflops_all_threads']:.1f} on {peak['threads']}")
    for r in rows:
        if r["model"] == "layers" and "result" in r:
            g = r["result"]
            print(f"\nlinear layers, weights in {r['dtype']}: oneDNN f32 matmul on plain weights "
                  f"{g['onednn_gflops']:.1f} GFLOP/s, Tessera packed panels {g['packed_gflops']:.1f}, "
                  f"as this CPU prepares them {g.get('chosen_gflops', float('nan')):.1f}")
            for layer in g["layers"]:
                of_peak = (f" ({layer['onednn_gflops'] / peak['gflops_all_threads']:.0%} of the peak)"
                           if peak and r["dtype"] == "f32" else "")
                print(f"  {layer['name']:<14} {layer['rows']}x{layer['in']}x{layer['out']}: oneDNN "
                      f"{layer['onednn_gflops']:.1f}{of_peak}, panels {layer['packed_gflops']:.1f}, "
                      f"{layer.get('chosen', '?')} {layer.get('chosen_gflops', float('nan')):.1f} GFLOP/s")


def paired_table(rows):
    """bench/paired.py's blocks: each engine against the reference engine's
    block just before or after it."""
    runs = [r for r in rows if r["engine"] == "paired" and "result" in r]
    if not runs:
        return
    print("\nPaired blocks (bench/paired.py: each engine one process, short blocks in rotating order):\n")
    print(TABLE_HEAD)
    for r in runs:
        print("\n".join(table_rows(f"ViT-{r['model'].capitalize()}/16", r["result"])))


def throughput(rows):
    """ViT-S batch 16: the whole forward's GFLOP/s against oneDNN's f32 matmul
    on the same layer shapes in the same round (the faster of plain and
    reordered weights), median over rounds of the per-round fraction."""
    fwd = {r["round"]: r["result"] for r in rows if r["model"] == "small-b16" and "result" in r}
    mm = {r["round"]: r["result"] for r in rows if r["model"] == "layers-b16" and "result" in r}
    fractions = []
    for rnd in sorted(set(fwd) & set(mm)):
        f = fwd[rnd]
        rate = 2.0 * f["gmacs"] * f["batch"] / (f["ms_p50"] * 1e-3)
        peer = max(mm[rnd]["onednn_gflops"], mm[rnd].get("chosen_gflops", 0.0))
        fractions.append((rate / peer, rate, peer, f["ms_p50"]))
    if fractions:
        fr = sorted(x[0] for x in fractions)
        med = statistics.median(fr)
        print(f"\nViT-S batch 16, f32: whole forward vs oneDNN's matmul on its layer shapes, per round: " +
              ", ".join(f"{rate:.1f}/{peer:.1f} GFLOP/s ({ms:.0f} ms)" for _, rate, peer, ms in fractions) +
              f"; median fraction {med:.1%} (range {fr[0]:.1%}-{fr[-1]:.1%})")


if __name__ == "__main__":
    main()
