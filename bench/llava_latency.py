#!/usr/bin/env python3
"""Latency of token-reduction pipelines on a LLaVA-1.5-7B-shaped model with
random bf16 weights (no quality: the weights are random): time to first token
and its parts for 576 visual tokens against pruned chains, as ratios to the
full model measured in the same run; and the decode rate against the bound
that memory bandwidth sets.

  /usr/bin/python3 bench/llava_latency.py [--model DIR] [--threads 2] [--repeat 1]
      [--requests-per-run 3] [--mode interleaved|processes] [--pipelines full,vtc-cls-64,...] [--max-new-tokens 4]
      [--bandwidth-gbps GB/s | --membw bench/.cache/membw] [--out FILE.json]

Without --model the random model is written to bench/.cache/llava-1.5-7b-random
by tools/make_random_llava.py (13.2 GiB, about a minute). Every process runs
`tessera caption --format json --dtype bf16 --max-new-tokens N --ignore-eos
--requests FILE` on one loaded model, each request naming its pipeline (the
same image every time), in one of two schedules:

  --mode interleaved (default): one process a round. Its first request (the
  pipeline that leads rotates with the round) is "cold"; then
  --requests-per-run cycles, each asking every pipeline once in a rotating
  order. A pruned pipeline's paired speed-up is the median over the cycles of
  the full model's prefill over its own in the same cycle: on a virtual
  machine whose speed drifts by tens of percent over minutes, requests seconds
  apart see the same machine, while separate processes may not.
  --mode processes: one process per pipeline a round, asking it
  --requests-per-run times; the first request of each is cold.

A process's first request also pays for setting up the decoder state (on a
virtual machine, first touching fresh memory runs at well under 1 GB/s) and
for the first pass over the weight pages in this process. It is reported on
its own (cold prefill, cold fraction; in the interleaved schedule only the
leading pipelines have one). The times, ratios and fractions without "cold"
are the medians of the later requests (with one request per process, the
cold ones). The image is encoded again whenever the pipeline changes, so
"vision s" is each request's own.

Decode bound: one decode step reads every decoder matrix once (bf16: 2 bytes
a weight, read in place; the embedding table only one row) plus the f32 KV
cache of every layer, so tokens/s <= bandwidth / (weight bytes + KV bytes).
The bandwidth comes from --bandwidth-gbps, or from running the --membw
program (bench/membw.cpp) at the same thread count right before and right
after every caption run: a virtual machine's bandwidth drifts by tens of
percent over minutes (a run lasts one or two), so each run's decode rate is
compared with the mean of the two probes around it, and the fraction
reported is the median over the runs.

With --membw the same program also reads the model's own safetensors files,
mapped as Tessera maps them, right before every run: the memory the weights
actually occupy (page-cache pages, placed when the files were read). On a
virtual machine that has read 10-30% below a fresh 1 GiB buffer. It is
reported beside the bound, with decode's rate against it, as context: the
decoder's GEMV reads those pages in another pattern and has beaten it, so it
is no bound.
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = [
    ("full", None),
    ("vtc-cls-128", "pipelines/vtc-cls-128.yaml"),
    ("vtc-cls-64", "pipelines/vtc-cls-64.yaml"),
    ("fastervlm-64", "pipelines/fastervlm-64.yaml"),
    ("fastv-k2-r75", "pipelines/fastv-k2-r75.yaml"),
    ("dyvte-exit-2", "pipelines/dyvte-exit-2.yaml"),
]
DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4}
RUN_DTYPE_BYTES = 2  # --dtype bf16: decoder matrices are 16-bit while running
VISION_PREFIXES = ("vision_tower", "vision_model", "multi_modal_projector", "model.vision_tower",
                   "model.multi_modal_projector")


def safetensors_headers(model_dir):
    """{tensor name: (dtype, shape)} over the folder's .safetensors files."""
    out = {}
    for name in sorted(os.listdir(model_dir)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, name), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for k, v in header.items():
            if k != "__metadata__":
                out[k] = (v["dtype"], v["shape"])
    return out


def decoder_read_bytes(model_dir):
    """What one decode step reads of the weights: every decoder matrix at the
    run's 16-bit size (embed_tokens: one row, ignored), 1-D tensors as f32.
    Also returns the K (= V) width per layer, per layer, for the KV cache."""
    weights, kv_width = 0, {}
    for name, (_, shape) in safetensors_headers(model_dir).items():
        if name.startswith(VISION_PREFIXES) or "embed_tokens" in name:
            continue
        n = 1
        for d in shape:
            n *= d
        weights += n * (RUN_DTYPE_BYTES if len(shape) >= 2 else 4)
        if name.endswith("self_attn.k_proj.weight"):
            kv_width[name] = shape[0]
    return weights, list(kv_width.values())


def measure_bandwidth(membw, threads, files=()):
    """Best read GB/s of a fresh 1 GiB buffer, or of `files` mapped (3 passes: they are large)."""
    cmd = [membw, "--threads", str(threads), "--passes", "3" if files else "5"]
    for f in files:
        cmd += ["--file", f]
    p = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(p.stdout.strip().splitlines()[-1])["gbps_best"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "bench", ".cache", "llava-1.5-7b-random"))
    ap.add_argument("--tessera", default=os.path.join(ROOT, "build", "tessera"))
    ap.add_argument("--image", default=os.path.join(ROOT, "models", "samples", "shapescene-heldout-44.png"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="alternating rounds")
    ap.add_argument("--requests-per-run", type=int, default=3,
                    help="requests each process answers; the first is reported as cold")
    ap.add_argument("--mode", choices=("interleaved", "processes"), default="interleaved",
                    help="all pipelines alternating in one process a round, or a process per pipeline")
    ap.add_argument("--pipelines", default=",".join(n for n, _ in PIPELINES),
                    help="comma-separated subset of: " + ", ".join(n for n, _ in PIPELINES))
    ap.add_argument("--max-new-tokens", type=int, default=4, help="tokens generated per run (>= 2)")
    ap.add_argument("--bandwidth-gbps", type=float, default=0.0, help="memory read bandwidth, GB/s")
    ap.add_argument("--membw", default="", help="bench/membw.cpp binary to measure the bandwidth with")
    ap.add_argument("--no-mmap", action="store_true",
                    help="caption --no-mmap: weights read into each process's memory instead of mapped")
    ap.add_argument("--out", default="", help="also write the results as JSON")
    args = ap.parse_args()
    chosen = [p for p in args.pipelines.split(",") if p]
    known = dict(PIPELINES)
    for p in chosen:
        if p not in known:
            ap.error(f"unknown pipeline {p}")
    if "full" not in chosen:
        chosen.insert(0, "full")  # the ratios are to the full model
    pipelines = [(n, known[n]) for n in chosen]
    if args.requests_per_run < 1:
        ap.error("--requests-per-run must be at least 1")
    if args.max_new_tokens < 2:
        ap.error("--max-new-tokens must be at least 2 (decode is timed after the first token)")
    if not os.path.exists(os.path.join(args.model, "config.json")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_llava.py"), "--config",
                        os.path.join(ROOT, "tools", "configs", "llava-1.5-7b-hf"), "--tokenizer-from",
                        os.path.join(ROOT, "tests", "fixtures", "llava", "tiny-llava-mha"), "--out", args.model],
                       check=True)
    bandwidth = args.bandwidth_gbps
    weight_bytes, kv_widths = decoder_read_bytes(args.model)

    weight_files = sorted(os.path.join(args.model, n) for n in os.listdir(args.model) if n.endswith(".safetensors"))
    # The requests file sits beside --out, or in a fresh temporary folder (not in the repository).
    scratch = None if args.out else tempfile.TemporaryDirectory(prefix="tessera-llava-")
    requests_dir = scratch.name if scratch else os.path.dirname(os.path.abspath(args.out))
    requests = os.path.join(requests_dir, "llava_requests.jsonl")
    # Each process's schedule: the pipeline of each of its requests, in order.
    names = [n for n, _ in pipelines]
    schedules = []
    for r in range(args.repeat):
        if args.mode == "interleaved":
            rotated = lambda k: names[k % len(names):] + names[:k % len(names)]  # noqa: E731
            schedule = [names[r % len(names)]]
            for c in range(args.requests_per_run):
                schedule += rotated(r + c)
            schedules.append(schedule)
        else:
            for name in names[r % len(names):] + names[:r % len(names)]:
                schedules.append([name] * args.requests_per_run)
    # runs: each process's first request; steady: the later ones; cycles: per
    # interleaved cycle, {pipeline: answer}.
    runs = {name: [] for name in names}
    steady = {name: [] for name in names}
    cycles = []
    for schedule in schedules:
        with open(requests, "w") as f:
            for i, name in enumerate(schedule):
                line = {"image": os.path.abspath(args.image), "id": i}
                if known[name]:
                    line["pipeline"] = os.path.join(ROOT, known[name])
                f.write(json.dumps(line) + "\n")
        cmd = [args.tessera, "caption", "--model", args.model, "--format", "json", "--dtype", "bf16",
               "--max-new-tokens", str(args.max_new_tokens), "--ignore-eos", "--threads", str(args.threads),
               "--requests", requests] + (["--no-mmap"] if args.no_mmap else [])
        probe = lambda: measure_bandwidth(args.membw, args.threads) if args.membw and not bandwidth else 0.0  # noqa: E731
        before = probe()
        weights_bandwidth = measure_bandwidth(args.membw, args.threads, weight_files) if args.membw else 0.0
        lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
        after = probe()
        run_bandwidth = bandwidth or (before + after) / 2
        answers = [json.loads(line) for line in lines if line.strip()]
        if len(answers) != len(schedule):
            sys.exit(f"{schedule[0]}: {len(answers)} answers to {len(schedule)} requests")
        for out in answers:
            out["bandwidth_gbps"] = run_bandwidth
            out["bandwidth_gbps_before_after"] = [before, after]
            out["weights_bandwidth_gbps"] = weights_bandwidth
        runs[schedule[0]].append(answers[0])
        if len(answers) == 1:
            steady[schedule[0]].append(answers[0])
        for name, out in zip(schedule[1:], answers[1:]):
            steady[name].append(out)
        if args.mode == "interleaved":
            for c in range(args.requests_per_run):
                at = 1 + c * len(names)
                cycles.append(dict(zip(schedule[at:at + len(names)], answers[at:at + len(names)])))
        steps = max(len(answers[0]["token_ids"]) - 1, 1)
        shown = ", ".join(f"{n} {a['ms']['prefill'] / 1000:.2f}/{a['ms']['decode'] / steps / 1000:.3f}"
                          for n, a in zip(schedule, answers))
        print(f"process: prefill s / decode s per token: {shown}", file=sys.stderr, flush=True)
    rows = []
    full = steady["full"]
    base = statistics.median(r["ms"]["first_token"] for r in full)
    base_prefill = statistics.median(r["ms"]["prefill"] for r in full)
    base_prefill_cold = statistics.median(r["ms"]["prefill"] for r in runs["full"]) if runs["full"] else None
    base_prefill_gmacs = full[0]["gmacs"]["prefill"]
    for name, _ in pipelines:
        rs = steady[name]
        prefill_cold = statistics.median(r["ms"]["prefill"] for r in runs[name]) if runs[name] else None
        med = lambda f: statistics.median(f(r) for r in rs)  # noqa: E731
        spread = lambda f: [min(f(r) for r in rs), max(f(r) for r in rs)]  # noqa: E731
        ttft = med(lambda r: r["ms"]["first_token"])
        prefill = med(lambda r: r["ms"]["prefill"])
        per_token = lambda r: r["ms"]["decode"] / max(len(r["token_ids"]) - 1, 1) / 1000  # noqa: E731
        decode_s = med(per_token)
        steps = max(len(rs[0]["token_ids"]) - 1, 1)
        # KV cache read by an average decode step: each layer's prefill length
        # plus half the generated tokens, K and V, f32.
        layers = rs[0]["decoder_tokens"]
        kv_bytes = sum((layers[i] + steps / 2) * w * 2 * 4 for i, w in enumerate(kv_widths[:len(layers)]))
        row = {"pipeline": name, "visual_tokens": rs[0]["visual_tokens"],
               "decoder_visual_tokens": rs[0]["decoder_visual_tokens"],
               "ttft_s": ttft / 1000, "ttft_ratio": ttft / base, "ttft_s_spread": [v / 1000 for v in
                                                                                   spread(lambda r: r["ms"]["first_token"])],
               "vision_s": med(lambda r: r["ms"]["vision"]) / 1000,
               "prefill_s": prefill / 1000,
               "prefill_s_spread": [v / 1000 for v in spread(lambda r: r["ms"]["prefill"])],
               "prefill_cold_s": prefill_cold / 1000 if prefill_cold else None,
               "prefill_cold_s_spread": [min(r["ms"]["prefill"] for r in runs[name]) / 1000,
                                         max(r["ms"]["prefill"] for r in runs[name]) / 1000] if runs[name] else None,
               "samples": len(rs), "cold_samples": len(runs[name]),
               "decode_s_per_token": decode_s, "decode_s_per_token_spread": spread(per_token),
               "decode_tokens_per_s": 1.0 / decode_s,
               "gmacs_prefill": rs[0]["gmacs"]["prefill"], "gmacs_vision": rs[0]["gmacs"]["vision"],
               "peak_rss_mib": max(r.get("peak_rss_mib", 0.0) for r in rs),
               "decode_weight_bytes": weight_bytes, "decode_kv_bytes": kv_bytes,
               "decode_gb_per_token": (weight_bytes + kv_bytes) / 1e9}
        if name != "full":
            row["prefill_speedup"] = base_prefill / prefill
            row["prefill_mac_ratio"] = row["gmacs_prefill"] / base_prefill_gmacs
            row["prefill_fraction_of_promised"] = row["prefill_speedup"] * row["prefill_mac_ratio"]
            if prefill_cold and base_prefill_cold:
                row["prefill_cold_speedup"] = base_prefill_cold / prefill_cold
                row["prefill_cold_fraction_of_promised"] = row["prefill_cold_speedup"] * row["prefill_mac_ratio"]
            paired = [c["full"]["ms"]["prefill"] / c[name]["ms"]["prefill"] for c in cycles]
            if paired:
                row["prefill_speedup_paired"] = statistics.median(paired)
                row["prefill_speedup_paired_spread"] = [min(paired), max(paired)]
                row["prefill_paired_fraction_of_promised"] = row["prefill_speedup_paired"] * row["prefill_mac_ratio"]
                row["prefill_paired_fraction_spread"] = [v * row["prefill_mac_ratio"] for v in (min(paired), max(paired))]
        if rs[0]["bandwidth_gbps"]:
            bw = med(lambda r: r["bandwidth_gbps"])
            row["bandwidth_gbps"] = bw
            row["bandwidth_gbps_spread"] = spread(lambda r: r["bandwidth_gbps"])
            if not bandwidth:  # how far the probes around one run disagreed, at most
                row["bandwidth_before_after_max_change"] = max(
                    abs(b - a) / min(b, a) for b, a in (r["bandwidth_gbps_before_after"] for r in rs))
            row["bound_tokens_per_s"] = bw * 1e9 / (weight_bytes + kv_bytes)
            # Each run against the bandwidth measured around it.
            row["decode_fraction_of_bound"] = med(
                lambda r: (1.0 / per_token(r)) / (r["bandwidth_gbps"] * 1e9 / (weight_bytes + kv_bytes)))
        if rs[0].get("weights_bandwidth_gbps"):
            row["weights_bandwidth_gbps"] = med(lambda r: r["weights_bandwidth_gbps"])
            row["weights_bandwidth_gbps_spread"] = spread(lambda r: r["weights_bandwidth_gbps"])
            row["decode_fraction_of_weights_read"] = med(
                lambda r: (1.0 / per_token(r)) / (r["weights_bandwidth_gbps"] * 1e9 / (weight_bytes + kv_bytes)))
        rows.append(row)
    print(f"Schedule: {args.mode}. Prefill: median of {rows[0]['samples']} later requests (cold: of "
          f"{rows[0]['cold_samples']} first requests of a process, which also set up the decoder state). Paired: the "
          "median over interleaved cycles of the full prefill over the pipeline's, in the same cycle. Peak memory: "
          "the process's" + (" (all pipelines in one process)" if args.mode == "interleaved" else "") + ".\n")
    print("| pipeline | visual tokens -> decoder | TTFT s | TTFT ratio | vision s | prefill s | cold prefill s | "
          "prefill GMACs | prefill speed-up / promised | paired speed-up (fraction of promised) | cold speed-up | "
          "decode s/token | decode tokens/s | bound tokens/s | peak memory GiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    fmt = lambda r, key, spec: format(r[key], spec) if isinstance(r.get(key), (int, float)) else "-"  # noqa: E731
    for r in rows:
        layers = r["decoder_visual_tokens"]
        shown = f"{r['visual_tokens']}" if len(set(layers)) == 1 else f"{r['visual_tokens']} ({layers[0]}..{layers[-1]})"
        promised = (f"{r['prefill_speedup']:.2f}x / {1 / r['prefill_mac_ratio']:.2f}x" if "prefill_speedup" in r
                    else "-")
        paired = (f"{r['prefill_speedup_paired']:.2f}x ({r['prefill_paired_fraction_of_promised']:.1%})"
                  if "prefill_speedup_paired" in r else "-")
        print(f"| {r['pipeline']} | {shown} | {r['ttft_s']:.1f} | {r['ttft_ratio']:.3f} | {r['vision_s']:.1f} | "
              f"{r['prefill_s']:.2f} | {fmt(r, 'prefill_cold_s', '.2f')} | {r['gmacs_prefill']:.4g} | {promised} | "
              f"{paired} | {fmt(r, 'prefill_cold_speedup', '.2f')} | {r['decode_s_per_token']:.2f} | "
              f"{r['decode_tokens_per_s']:.2f} | {fmt(r, 'bound_tokens_per_s', '.2f')} | "
              f"{r['peak_rss_mib'] / 1024:.1f} |")
    if rows[0].get("bandwidth_gbps"):
        source = "given" if bandwidth else "median over the runs of the mean of the probes before and after each"
        print(f"\nDecode bound: {rows[0]['bandwidth_gbps']:.2f} GB/s ({source}) / "
              f"{(weight_bytes + rows[0]['decode_kv_bytes']) / 1e9:.2f} GB read per token (weights "
              f"{weight_bytes / 1e9:.2f} GB + KV cache) = {rows[0]['bound_tokens_per_s']:.2f} tokens/s; measured "
              f"{rows[0]['decode_tokens_per_s']:.2f} ({rows[0]['decode_fraction_of_bound']:.0%} of the bound, "
              f"median of runs each against its own bandwidth)" +
              (f"; the probes around one run differed by up to {rows[0]['bandwidth_before_after_max_change']:.0%}."
               if "bandwidth_before_after_max_change" in rows[0] else "."))
    if rows[0].get("weights_bandwidth_gbps"):
        print(f"Reading the model's own files (membw --file): {rows[0]['weights_bandwidth_gbps']:.2f} GB/s; "
              f"decode reads its weights and KV cache at {rows[0]['decode_fraction_of_weights_read']:.0%} of that.")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"model": args.model, "threads": args.threads, "repeat": args.repeat, "mode": args.mode,
                       "requests_per_run": args.requests_per_run, "max_new_tokens": args.max_new_tokens, "no_mmap": args.no_mmap, "bandwidth_gbps": bandwidth or None,
                       "membw": args.membw or None,
                       "decode_weight_bytes": weight_bytes, "rows": rows}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
