#!/usr/bin/env python3
"""Latency of token-reduction pipelines on a LLaVA-1.5-7B-shaped model with
random bf16 weights (no quality: the weights are random): time to first token
and its parts for 576 visual tokens against pruned chains, as ratios to the
full model measured in the same run.

  /usr/bin/python3 bench/llava_latency.py [--model DIR] [--threads 2] [--repeat 1]

Without --model the random model is written to bench/.cache/llava-1.5-7b-random
by tools/make_random_llava.py (13.2 GiB, about a minute). Each pipeline runs
`tessera caption --format json --dtype bf16 --max-new-tokens 4 --ignore-eos`
in its own process, in alternating rounds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = [
    ("full (576)", None),
    ("vtc-cls-128", "pipelines/vtc-cls-128.yaml"),
    ("vtc-cls-64", "pipelines/vtc-cls-64.yaml"),
    ("fastervlm-64", "pipelines/fastervlm-64.yaml"),
    ("fastv-k2-r75", "pipelines/fastv-k2-r75.yaml"),
    ("dyvte-exit-2", "pipelines/dyvte-exit-2.yaml"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "bench", ".cache", "llava-1.5-7b-random"))
    ap.add_argument("--tessera", default=os.path.join(ROOT, "build", "tessera"))
    ap.add_argument("--image", default=os.path.join(ROOT, "models", "samples", "shapescene-heldout-44.png"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="alternating rounds")
    ap.add_argument("--out", default="", help="also write the results as JSON")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.model, "config.json")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_llava.py"), "--config",
                        os.path.join(ROOT, "tools", "configs", "llava-1.5-7b-hf"), "--out", args.model], check=True)
    runs = {name: [] for name, _ in PIPELINES}
    for _ in range(args.repeat):
        for name, pipeline in PIPELINES:
            cmd = [args.tessera, "caption", "--model", args.model, "--format", "json", "--dtype", "bf16",
                   "--max-new-tokens", "4", "--ignore-eos", "--threads", str(args.threads), args.image]
            if pipeline:
                cmd[2:2] = ["--pipeline", os.path.join(ROOT, pipeline)]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            runs[name].append(out)
            print(f"{name}: first token {out['ms']['first_token'] / 1000:.1f} s", file=sys.stderr, flush=True)
    rows = []
    base = statistics.median(r["ms"]["first_token"] for r in runs[PIPELINES[0][0]])
    for name, _ in PIPELINES:
        rs = runs[name]
        med = lambda f: statistics.median(f(r) for r in rs)  # noqa: E731
        ttft = med(lambda r: r["ms"]["first_token"])
        rows.append({"pipeline": name, "visual_tokens": rs[0]["visual_tokens"],
                     "decoder_visual_tokens": rs[0]["decoder_visual_tokens"],
                     "ttft_s": ttft / 1000, "ttft_ratio": ttft / base,
                     "vision_s": med(lambda r: r["ms"]["vision"]) / 1000,
                     "prefill_s": med(lambda r: r["ms"]["prefill"]) / 1000,
                     "decode_s_per_token": med(lambda r: r["ms"]["decode"] / max(len(r["token_ids"]) - 1, 1)) / 1000,
                     "gmacs_prefill": rs[0]["gmacs"]["prefill"], "gmacs_vision": rs[0]["gmacs"]["vision"]})
    print("| pipeline | visual tokens -> decoder | TTFT s | TTFT ratio | vision s | prefill s | prefill GMACs | "
          "decode s/token |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        layers = r["decoder_visual_tokens"]
        shown = f"{r['visual_tokens']}" if len(set(layers)) == 1 else f"{r['visual_tokens']} ({layers[0]}..{layers[-1]})"
        print(f"| {r['pipeline']} | {shown} | {r['ttft_s']:.1f} | {r['ttft_ratio']:.3f} | {r['vision_s']:.1f} | "
              f"{r['prefill_s']:.1f} | {r['gmacs_prefill']:.0f} | {r['decode_s_per_token']:.2f} |")
    if args.out:
        json.dump({"model": args.model, "threads": args.threads, "repeat": args.repeat, "rows": rows},
                  open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
