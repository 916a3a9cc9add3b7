#!/usr/bin/python3
"""The issue-7 performance suite: every figure in one run, as ratios to peers
measured in the same run (bench/run.sh --suite issue7 prepares the peers,
the models and the binaries, then runs this).

Sections (--sections, default all):
  peers      fp32 latency of Tessera, ONNX Runtime and PyTorch per model and
             batch, plus oneDNN's and Tessera's packed linear-layer rate on
             that model's layer shapes (build/tessera_gemm_bench), all in
             alternating rounds; Tessera's whole-forward GFLOP/s as a
             fraction of oneDNN's matmul rate.
  pruned     Tessera alone: plain model vs pruning pipelines (EViT keep 0.7,
             VTC-CLS keep 64) in alternating rounds: speed-up, MAC ratio and
             the fraction of the promised speed-up (speed-up x MAC ratio);
             then the same processes as `tessera bench --serve` in
             bench/paired.py's alternating blocks (--paired-blocks), with
             the host probe: the paired speed-up and fraction.
  bf16       Tessera f32 vs bf16 on a ViT when `tessera bench` has --dtype;
             otherwise "not available".
  paired     the --paired-config models (the suite: ViT-Tiny and ViT-S at
             batch 1) in bench/paired.py's short alternating blocks:
             Tessera f32 and bf16 (build/tessera_vit_bench --serve), ORT and
             PyTorch each one long-lived process, with the host probe;
             per-block ratios to ORT (robust to a noisy host).
  bandwidth  memory read bandwidth (bench/membw.cpp), best of N passes.
  llava      bench/llava_latency.py: decode tokens/s against the bound the
             measured bandwidth sets (weight bytes read per token), beside
             the rate at which membw reads the model's own files, and the
             VTC-CLS prefill speed-up against its MACs.

Writes bench/.cache/perf.json and prints Markdown tables on stdout (progress
on stderr). Statistic everywhere: median of per-round medians, spread =
min-max of the round medians. Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
import paired  # noqa: E402
from compare import Job, alternate, markdown_table, summarise  # noqa: E402

SECTIONS = ("peers", "pruned", "bf16", "paired", "bandwidth", "llava")
# A configuration whose linear layers take at least this many GFLOP per
# forward pass is "heavy": it runs --heavy-iters / --heavy-warmup iterations
# (ViT-L/14-336 at batch 1: 349, ViT-S/16 at batch 16: 136; ViT-S at batch
# 1: 8.5, ViT-Tiny: 2.2).
HEAVY_GFLOP = 50.0
PROMISE = 0.9  # issue 7: a pruned pipeline should deliver >= 90% of 1 / MAC ratio


# ---------------------------------------------------------------- model shapes

def vit_linear_shapes(model_dir, batch):
    """The linear layers of one forward pass of a timm-layout ViT, as
    tessera_gemm_bench --shapes entries (name, rows, in, out, epilogue,
    count): patch embedding, per block qkv / proj / fc1 / fc2, head."""
    from export_vit_onnx import model_kwargs_from_config
    with open(os.path.join(model_dir, "config.json")) as f:
        kw = model_kwargs_from_config(json.load(f))
    c, depth = kw["embed_dim"], kw["depth"]
    hidden = int(c * kw["mlp_ratio"])
    patches = (kw["img_size"] // kw["patch_size"]) ** 2
    rows = batch * (patches + 1)
    fc1_epilogue = "gelu_erf" if kw["act"] == "gelu" else "none"  # QuickGELU runs after the product
    shapes = [("patch", batch * patches, kw["in_chans"] * kw["patch_size"] ** 2, c, "none", 1),
              ("qkv", rows, c, 3 * c, "none", depth),
              ("proj", rows, c, c, "residual", depth),
              ("fc1", rows, c, hidden, fc1_epilogue, depth),
              ("fc2", rows, hidden, c, "residual", depth)]
    if kw["num_classes"]:
        shapes.append(("head", batch, c, kw["num_classes"], "none", 1))
    return shapes


def shapes_arg(shapes):
    return ",".join(":".join(str(v) for v in s) for s in shapes)


def shapes_gflop(shapes):
    return sum(2.0 * rows * k * n * count for _, rows, k, n, _, count in shapes) / 1e9


# ---------------------------------------------------------------- formatting

def fmt_ms(v):
    return compare.fmt_ms(v)


def fmt_spread(s):
    return f"{fmt_ms(s['p50'])} ({fmt_ms(s['min'])}-{fmt_ms(s['max'])})"


def fmt_rate(s):
    return f"{s['p50']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def unavailable(s):
    return f"unavailable ({s.get('reason', '?')})"


def spread_of(values):
    return {"p50": statistics.median(values), "min": min(values), "max": max(values),
            "rounds": values}


# ---------------------------------------------------------------- sections

def section_peers(a, env, configs):
    """configs: [(label, model_dir, onnx, batch)]."""
    out = []
    engine_env = compare.engine_envs(a.threads)
    for label, model_dir, onnx, batch in configs:
        shapes = vit_linear_shapes(model_dir, batch)
        linear_gflop = shapes_gflop(shapes)
        heavy = linear_gflop >= HEAVY_GFLOP
        iters, warmup = (a.heavy_iters, a.heavy_warmup) if heavy else (a.iters, a.warmup)
        gemm_iters, gemm_warmup = (max(3, 2 * a.heavy_iters), 2) if heavy else (max(3, a.iters), 5)
        name = f"{label} b{batch}"
        busy = compare.cpu_busy_fraction()
        if busy is not None and busy > 0.15:
            print(f"warning: {busy:.0%} of the CPU was busy just before {name}", file=sys.stderr)

        def engine_cmd(e, r, model_dir=model_dir, onnx=onnx, batch=batch, iters=iters,
                       warmup=warmup):
            return compare.engine_command(e, a.root, a.tessera, model_dir, onnx, batch, iters,
                                          warmup, a.threads, r == 0)

        jobs = [Job(e, compare.LABELS[e], lambda r, e=e: engine_cmd(e, r), engine_env[e])
                for e in a.engines]
        gemm_cmd = [a.gemm_bench, "--threads", str(a.threads), "--iters", str(gemm_iters),
                    "--warmup", str(gemm_warmup), "--shapes", shapes_arg(shapes), "--json"]
        jobs.append(Job("matmul", "matmul", lambda r, c=gemm_cmd: c, env, "onednn_gflops"))
        skip = {}
        if a.tessera_unavailable:
            skip["tessera"] = skip["matmul"] = a.tessera_unavailable

        def note(res):
            if "onednn_gflops" in res:
                return f"oneDNN {res['onednn_gflops']:6.1f} GFLOP/s, packed {res['packed_gflops']:6.1f}"
            return f"p50 {res['ms_p50']:8.2f} ms"

        per, reasons = alternate(name, jobs, a.rounds, a.timeout, skip, note)
        entry = {"model": label, "model_dir": model_dir, "onnx": onnx, "batch": batch,
                 "threads": a.threads, "iters": iters, "warmup": warmup, "heavy": heavy,
                 "cpu_busy_before": busy}
        entry.update(compare.summarise_engines(a.engines, per, reasons))
        entry["parity"] = compare.parity_summary(entry, onnx)

        mm = per["matmul"]
        if mm:
            entry["matmul"] = {"available": True, "shapes": [list(s) for s in shapes],
                               "linear_gflop": linear_gflop, "iters": gemm_iters,
                               "onednn_gflops": spread_of([r["onednn_gflops"] for r in mm]),
                               "packed_gflops": spread_of([r["packed_gflops"] for r in mm]),
                               "layers_last_round": mm[-1]["layers"],
                               "round_foreign_cpu": [r.get("foreign_cpu") for r in mm]}
        else:
            entry["matmul"] = {"available": False, "reason": reasons.get("matmul", "not run")}
        ts = entry["engines"].get("tessera", {})
        if ts.get("available") and "gmacs" in ts:
            gflop = 2.0 * ts["gmacs"] * batch  # gmacs is per image
            entry["tessera_gflop_per_forward"] = gflop
            entry["tessera_gflops"] = gflop / (ts["p50"] / 1e3)
            entry["tessera_images_per_s"] = batch / (ts["p50"] / 1e3)
            if entry["matmul"]["available"]:
                entry["fraction_of_onednn_matmul"] = (
                    entry["tessera_gflops"] / entry["matmul"]["onednn_gflops"]["p50"])
        fs = [f for f in entry["matmul"].get("round_foreign_cpu", []) if f is not None]
        if fs:
            entry["max_foreign_cpu"] = max(fs + [entry["max_foreign_cpu"] or 0.0])
        out.append(entry)
    return out


def section_pruned(a, env, models, pipelines):
    """models: [(label, model_dir)]; pipelines: [(name, yaml)]."""
    out = []
    for label, model_dir in models:
        def cmd(pipeline, model_dir=model_dir):
            c = [a.tessera, "bench", "--model", model_dir, "--batch", "1", "--iters", str(a.iters),
                 "--warmup", str(a.warmup), "--threads", str(a.threads), "--format", "json"]
            return c + (["--pipeline", pipeline] if pipeline else [])

        jobs = [Job("plain", "plain", lambda r: cmd(None), env)]
        jobs += [Job(n, n, lambda r, y=y: cmd(y), env) for n, y in pipelines]
        skip = {j.key: a.tessera_unavailable for j in jobs} if a.tessera_unavailable else {}
        per, reasons = alternate(f"{label} pruned", jobs, a.rounds, a.timeout, skip)
        rows = {}
        for j in jobs:
            if not per[j.key]:
                rows[j.key] = {"available": False, "reason": reasons.get(j.key, "not run")}
                continue
            s = summarise(per[j.key])
            s.update(available=True, gmacs=per[j.key][-1]["gmacs"],
                     tokens=per[j.key][-1].get("tokens"))
            rows[j.key] = s
        plain = rows["plain"]
        for n, y in pipelines:
            r = rows[n]
            r["pipeline"] = y
            if not (r["available"] and plain["available"]):
                continue
            r["speedup"] = plain["p50"] / r["p50"]
            r["mac_ratio"] = r["gmacs"] / plain["gmacs"]
            r["promised_speedup"] = 1.0 / r["mac_ratio"]
            if r["mac_ratio"] > 0.99:
                # Nothing promised: the speed-up shows only the stage's own cost.
                r["fraction_of_promised"] = r["meets_90"] = None
                r["note"] = ("no MACs saved on a classifier: the stage prunes after the encoder "
                             "(before a LLaVA projector), so the speed-up shows only its scoring "
                             "cost; its promise is the LLaVA prefill row in section 6")
            else:
                r["fraction_of_promised"] = r["speedup"] / r["promised_speedup"]
                r["meets_90"] = r["fraction_of_promised"] >= PROMISE
        if a.paired_blocks > 0 and not a.tessera_unavailable:
            pruned_paired(a, env, label, model_dir, pipelines, rows)
        out.append({"model": label, "model_dir": model_dir, "rows": rows})
    return out


def pruned_paired(a, env, label, model_dir, pipelines, rows):
    """The plain model and each pipeline as long-lived `tessera bench --serve`
    processes in bench/paired.py's short alternating blocks, with the host
    probe: each pipeline's speed-up is the median over the blocks of plain /
    pipeline, two measurements a few hundred milliseconds apart, where the
    rounds above compare processes that may have met the host in different
    phases. Adds rows[name]["paired"]."""
    q = shlex.quote
    base = (f"{q(a.tessera)} bench --model {q(model_dir)} --batch 1 --threads {a.threads} "
            f"--warmup {a.warmup} --serve")
    safe = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in label)
    cmd = [sys.executable, os.path.join(a.root, "bench", "paired.py"), "--ref", "plain", "--probe", "host",
           "--blocks", str(a.paired_blocks), "--iters", "5",
           "--raw", os.path.join(a.cache, f"pruned-{safe}.raw.json"), "--engine", f"plain={base}"]
    for name, y in pipelines:
        if rows[name].get("available") and rows[name].get("fraction_of_promised") is not None:
            cmd += ["--engine", f"{name}={base} --pipeline {q(y)}"]
    cmd += ["--engine", f"host={q(a.gemm_bench)} --peak --serve --threads {a.threads}"]
    print(f"[pruned, paired] {label}: {a.paired_blocks} blocks", file=sys.stderr)
    try:
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
        failure = None if run.returncode == 0 else (run.stderr.strip().splitlines() or ["failed"])[-1][-300:]
    except subprocess.TimeoutExpired:
        failure = f"timed out after {a.timeout} s"
    for name, _ in pipelines:
        r = rows[name]
        if r.get("fraction_of_promised") is None:
            continue
        if failure:
            r["paired"] = {"available": False, "reason": failure}
            continue
        result = json.loads(run.stdout)
        ratio = result["engines"][name]["ratio_to_ref"]  # pipeline / plain per block
        speedup = 1.0 / ratio["median"]
        r["paired"] = {"available": True, "blocks": ratio["blocks"], "speedup": speedup,
                       "speedup_quartiles": [1.0 / ratio["q75"], 1.0 / ratio["q25"]],
                       "fraction_of_promised": speedup / r["promised_speedup"],
                       "meets_90": speedup / r["promised_speedup"] >= PROMISE,
                       "host_gflops": result["engines"]["host"].get("host_gflops")}


def section_paired(a, env, configs):
    """bench/paired.py per config (label, model_dir, onnx, batch): Tessera
    f32 and bf16, ORT and PyTorch as selected, and the host probe, in
    --paired-blocks blocks of 1 + 5 forwards; every block's times in
    paired-LABEL.raw.json beside the results."""
    out = []
    q = shlex.quote
    for label, model_dir, onnx, batch in configs:
        common = f"--batch {batch} --threads {a.threads} --warmup {a.warmup} --serve"
        vit = f"{q(a.vit_bench)} --model {q(model_dir)} {common}"
        engines = {}
        if "tessera" in a.engines and not a.tessera_unavailable:
            engines["tessera-f32"] = vit
            engines["tessera-bf16"] = vit + " --dtype bf16"
        if "ort" in a.engines:
            ort_dir = os.path.join(a.cache, "ort")
            engines["ort"] = (f"node {q(os.path.join(a.root, 'bench', 'ort_bench.js'))} --onnx {q(onnx)} {common} "
                              f"--ref {q(onnx + '.ref_logits.npy')} --ort-dir {q(ort_dir)}")
        if "pytorch" in a.engines:
            engines["pytorch"] = (f"{q(sys.executable)} {q(os.path.join(a.root, 'bench', 'export_vit_onnx.py'))} "
                                  f"bench --model {q(model_dir)} {common}")
        entry = {"model": label, "blocks": a.paired_blocks}
        if "ort" not in engines or len(engines) < 2:
            entry.update(available=False, reason="needs ORT and another engine")
            out.append(entry)
            continue
        safe = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in label)
        cmd = [sys.executable, os.path.join(a.root, "bench", "paired.py"), "--ref", "ort", "--probe", "host",
               "--blocks", str(a.paired_blocks), "--iters", "5",
               "--raw", os.path.join(a.cache, f"paired-{safe}.raw.json")]
        for name, command in engines.items():
            cmd += ["--engine", f"{name}={command}"]
        cmd += ["--engine", f"host={q(a.gemm_bench)} --peak --serve --threads {a.threads}"]
        print(f"[paired] {label} (batch {batch}): {a.paired_blocks} blocks", file=sys.stderr)
        try:
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
        except subprocess.TimeoutExpired:
            entry.update(available=False, reason=f"timed out after {a.timeout} s")
            out.append(entry)
            continue
        if run.returncode != 0:
            entry.update(available=False, reason=(run.stderr.strip().splitlines() or ["failed"])[-1][-300:])
        else:
            entry.update(available=True, result=json.loads(run.stdout))
        out.append(entry)
    return out


def section_bf16(a, env, model):
    """Tessera f32 and bf16 on one ViT, when `tessera bench` offers --dtype,
    and ONNX Runtime fp32 in the same rounds when an ONNX export is given
    (model: (label, dir) or (label, dir, onnx))."""
    try:
        help_text = subprocess.run([a.tessera, "bench", "--help"], capture_output=True, text=True,
                                   timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"available": False, "reason": f"tessera bench --help failed: {e}"}
    if "--dtype" not in help_text:
        return {"available": False,
                "reason": "tessera bench has no --dtype option; ViTs run in f32 only"}
    label, model_dir = model[0], model[1]
    onnx = model[2] if len(model) > 2 else ""
    base = [a.tessera, "bench", "--model", model_dir, "--batch", "1", "--iters", str(a.iters),
            "--warmup", str(a.warmup), "--threads", str(a.threads), "--format", "json"]
    jobs = [Job("f32", "f32", lambda r: base, env),
            Job("bf16", "bf16", lambda r: base + ["--dtype", "bf16"], env)]
    if onnx and "ort" in a.engines:
        ort_env = compare.engine_envs(a.threads)["ort"]
        jobs.append(Job("ort", "ORT fp32", lambda r: compare.engine_command(
            "ort", a.root, a.tessera, model_dir, onnx, 1, a.iters, a.warmup, a.threads), ort_env))
    per, reasons = alternate(f"{label} bf16", jobs, a.rounds, a.timeout)
    if not per["f32"] or not per["bf16"]:
        return {"available": False, "reason": reasons.get("bf16") or reasons.get("f32")}
    f32, bf16 = summarise(per["f32"]), summarise(per["bf16"])
    out = {"available": True, "model": label, "f32": f32, "bf16": bf16, "speedup": f32["p50"] / bf16["p50"],
           "peak_rss_mib": {"f32": per["f32"][0].get("peak_rss_mib"), "bf16": per["bf16"][0].get("peak_rss_mib")}}
    if per.get("ort"):
        out["ort"] = summarise(per["ort"])
        out["bf16_over_ort"] = bf16["p50"] / out["ort"]["p50"]
    return out


def section_bandwidth(a, env):
    cmd = [a.membw, "--threads", str(a.threads), "--passes", str(a.membw_passes),
           "--mib", str(a.membw_mib)]
    per, reasons = alternate("bandwidth", [Job("membw", "membw", lambda r: cmd, env, "gbps_best")],
                             a.rounds, a.timeout,
                             fmt=lambda res: f"best {res['gbps_best']:6.2f} GB/s, "
                                             f"median {res['gbps_median']:6.2f}")
    rs = per["membw"]
    if not rs:
        return {"available": False, "reason": reasons.get("membw", "not run")}
    return {"available": True, "threads": a.threads, "bytes": rs[0]["bytes"],
            "passes": a.membw_passes,
            "gbps_best": max(r["gbps_best"] for r in rs),
            "gbps_best_per_round": spread_of([r["gbps_best"] for r in rs]),
            "gbps_median_per_round": spread_of([r["gbps_median"] for r in rs]),
            "round_foreign_cpu": [r.get("foreign_cpu") for r in rs]}


def section_llava(a, env, bandwidth):
    if a.llava in ("", "none"):
        return {"available": False, "reason": "skipped (--llava none)"}
    out_json = os.path.join(a.cache, "llava.json")
    cmd = ["/usr/bin/python3", os.path.join(a.root, "bench", "llava_latency.py"),
           "--model", a.llava, "--tessera", a.tessera, "--threads", str(a.threads),
           "--repeat", str(a.llava_repeat), "--requests-per-run", str(a.llava_requests),
           "--pipelines", "full,vtc-cls-64",
           "--max-new-tokens", str(a.llava_new_tokens), "--out", out_json] + (["--no-mmap"] if a.llava_no_mmap else [])
    if bandwidth.get("available"):
        cmd += ["--membw", a.membw]  # measured again before each run: the bandwidth drifts
    print(f"  llava: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    try:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=4 * 3600)
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": "timed out"}
    if p.returncode != 0:
        return {"available": False, "reason": f"llava_latency.py exit {p.returncode}"}
    with open(out_json) as f:
        res = json.load(f)
    res["available"] = True
    return res


# ---------------------------------------------------------------- report

def report(results):
    """Markdown tables, one per section."""
    lines = [f"# Tessera performance suite (issue 7), {results['generated']}",
             "", f"{results['machine']['cpu']}, {results['config']['threads']} threads; "
             f"{results['config']['rounds']} alternating rounds; cells: median of round medians "
             "(min-max of round medians)."]
    engines = results["config"]["engines"]
    peers = results.get("peers")
    if peers is not None:
        head = ["model", "batch"] + [f"{compare.LABELS[e]} ms" for e in engines]
        ratio_cols = [p for p in ("ort", "pytorch") if p in engines and "tessera" in engines]
        head += [f"Tessera/{compare.LABELS[p]}" for p in ratio_cols]
        head += ["Tessera img/s", "parity (rel. max diff)", "other CPU"]
        rows = []
        for m in peers:
            row = [m["model"], str(m["batch"])]
            for e in engines:
                s = m["engines"][e]
                row.append(fmt_spread(s) if s["available"] else unavailable(s))
            for p in ratio_cols:
                v = m.get(f"ratio_tessera_{p}")
                row.append(f"{v:.2f}x" if v is not None else "-")
            ips = m.get("tessera_images_per_s")
            row.append(f"{ips:.1f}" if ips else "-")
            row.append(compare.parity_note(m["parity"]))
            f = m.get("max_foreign_cpu")
            row.append("-" if f is None else f"{f:.0%}" + (" (noisy)" if f > 0.10 else ""))
            rows.append(row)
        lines += ["", "## 1-3. fp32 latency against ONNX Runtime and PyTorch (ratio < 1: Tessera faster)",
                  "", markdown_table(head, rows)]
        head = ["model", "batch", "GFLOP/forward", "Tessera GFLOP/s", "oneDNN matmul GFLOP/s",
                "Tessera packed matmul GFLOP/s", "Tessera / oneDNN matmul"]
        rows = []
        for m in peers:
            mm = m["matmul"]
            g = m.get("tessera_gflops")
            fr = m.get("fraction_of_onednn_matmul")
            rows.append([m["model"], str(m["batch"]),
                         f"{m['tessera_gflop_per_forward']:.1f}" if g else "-",
                         f"{g:.1f}" if g else "-",
                         fmt_rate(mm["onednn_gflops"]) if mm["available"] else unavailable(mm),
                         fmt_rate(mm["packed_gflops"]) if mm["available"] else "-",
                         f"{fr:.0%}" if fr is not None else "-"])
        lines += ["", "## 3. Compute rate: whole forward pass against oneDNN's matmul on the "
                  "model's linear-layer shapes (same threads)", "", markdown_table(head, rows)]
    pruned = results.get("pruned")
    if pruned is not None:
        head = ["model", "pipeline", "Tessera ms", "GMACs/image", "speed-up", "MAC ratio",
                "fraction of promised speed-up", ">= 90%", "paired speed-up (quartiles)", "paired fraction",
                "paired >= 90%"]
        rows, notes = [], []
        for m in pruned:
            for key, r in m["rows"].items():
                if not r["available"]:
                    rows.append([m["model"], key, unavailable(r)] + ["-"] * 8)
                    continue
                if key == "plain":
                    rows.append([m["model"], "plain", fmt_spread(r), f"{r['gmacs']:.3f}", "1.00x",
                                 "1.000"] + ["-"] * 5)
                    continue
                sp, fr = r.get("speedup"), r.get("fraction_of_promised")
                pr = r.get("paired", {"available": False, "reason": "not run"})
                paired_cells = ["-", "-", "-"]
                if pr["available"]:
                    lo, hi = pr["speedup_quartiles"]
                    paired_cells = [f"{pr['speedup']:.3f}x ({lo:.3f}-{hi:.3f})", f"{pr['fraction_of_promised']:.1%}",
                                    "yes" if pr["meets_90"] else "no"]
                elif fr is not None:
                    paired_cells = [unavailable(pr), "-", "-"]
                rows.append([m["model"], key, fmt_spread(r), f"{r['gmacs']:.3f}",
                             f"{sp:.2f}x" if sp else "-",
                             f"{r['mac_ratio']:.3f}" if sp else "-",
                             f"{fr:.1%}" if fr is not None else ("n/a (*)" if r.get("note") else "-"),
                             ("yes" if r["meets_90"] else "no") if fr is not None else "-"] + paired_cells)
                if r.get("note") and r["note"] not in notes:
                    notes.append(r["note"])
        lines += ["", "## 4. Pruned pipelines (Tessera alone; fraction = speed-up / (1 / MAC ratio))",
                  "", markdown_table(head, rows)]
        lines += [f"\n(*) {n}" for n in notes]
    bf16 = results.get("bf16")
    if bf16 is not None:
        lines += ["", "## 5. bf16", ""]
        if bf16["available"]:
            lines.append(f"{bf16['model']}: f32 {fmt_spread(bf16['f32'])} ms, bf16 "
                         f"{fmt_spread(bf16['bf16'])} ms, speed-up {bf16['speedup']:.2f}x")
            if "ort" in bf16:
                lines.append(f"ORT fp32 in the same rounds {fmt_spread(bf16['ort'])} ms: "
                             f"Tessera bf16 / ORT fp32 = {bf16['bf16_over_ort']:.2f}x")
            peak = bf16.get("peak_rss_mib") or {}
            if peak.get("f32") and peak.get("bf16"):
                lines.append(f"peak memory: f32 {peak['f32']:.0f} MiB, bf16 {peak['bf16']:.0f} MiB")
        else:
            lines.append(f"bf16: not available ({bf16['reason']})")
    pair = results.get("paired")
    if pair is not None:
        lines += ["", "## 5b. Paired blocks (bench/paired.py; per-block ratios to ORT fp32, host probe)", ""]
        rows = [r for m in pair if m["available"] for r in paired.table_rows(m["model"], m["result"])]
        if rows:
            lines += [paired.TABLE_HEAD] + rows
        lines += [f"{m['model']}: not available ({m['reason']})" for m in pair if not m["available"]]
    bw = results.get("bandwidth")
    if bw is not None:
        lines += ["", "## 6. Memory bandwidth and LLaVA decode", ""]
        if bw["available"]:
            lines.append(f"Read bandwidth ({bw['threads']} threads, {bw['bytes'] / 2**30:.0f} GiB "
                         f"array, best of {bw['passes']} passes per round): best "
                         f"{bw['gbps_best']:.2f} GB/s; per-round best "
                         f"{fmt_rate(bw['gbps_best_per_round'])} GB/s")
        else:
            lines.append(f"bandwidth: unavailable ({bw['reason']})")
    llava = results.get("llava")
    if llava is not None:
        if not llava["available"]:
            lines += ["", f"LLaVA: unavailable ({llava['reason']})"]
        else:
            interleaved = llava.get("mode") == "interleaved"
            schedule = (f"{llava['repeat']} processes, each a cold request then {llava.get('requests_per_run', 1)} "
                        "cycles asking every pipeline once in turn" if interleaved else
                        f"{llava['repeat']} rounds of {llava.get('requests_per_run', 1)} requests a process per pipeline")
            weights = "weights read into memory (--no-mmap)" if llava.get("no_mmap") else "weights mapped"
            lines += ["", f"LLaVA model: {llava['model']} ({schedule}, {llava.get('max_new_tokens')} new tokens, "
                      f"{weights}). "
                      "Prefill: the median of the later requests; paired: the median over cycles of the full "
                      "prefill over the pipeline's in the same cycle; cold: of a process's first request, which "
                      "also sets up the decoder state" + ("; peak memory: the process's, all pipelines" if interleaved
                                                          else "") + ".", "",
                      llava_table(llava, bw["gbps_best"] if bw and bw.get("available") else None)]
    f = results.get("max_foreign_cpu")
    if f is not None and f > 0.10:
        lines += ["", f"WARNING: other processes used up to {f:.0%} of the CPU during some "
                  "rounds; rerun on an idle machine."]
    return "\n".join(lines)


def paired_fraction(row):
    if "prefill_paired_fraction_of_promised" not in row:
        return "-"
    lo, hi = row["prefill_paired_fraction_spread"]
    return f"{row['prefill_paired_fraction_of_promised']:.1%} ({lo:.0%}-{hi:.0%})"


def llava_table(llava, best_gbps=None):
    """best_gbps: the bandwidth section's best pass. Decode is also read
    against the highest bandwidth measured anywhere in the suite (that pass,
    or the highest probe around the LLaVA runs): on a host whose bandwidth
    swings within minutes, the probes around a run can miss the phases the
    run saw, and decode has then exceeded its bound."""
    head = ["pipeline", "visual tokens", "TTFT s", "prefill s", "cold prefill s", "prefill speed-up",
            "prefill MAC ratio", "fraction of promised", "paired speed-up", "paired fraction (spread)",
            "cold fraction", "decode tokens/s",
            "weights+KV GB/token", "bandwidth GB/s (around the runs)", "bandwidth bound tokens/s", "decode / bound",
            "decode / highest bandwidth seen", "model files read GB/s", "decode / files' rate", "peak memory GiB"]
    rows = []
    for r in llava["rows"]:
        def opt(key, spec):
            v = r.get(key)
            return format(v, spec) if isinstance(v, (int, float)) else "-"
        seen = [v for v in [best_gbps] + list(r.get("bandwidth_gbps_spread") or []) if v]
        highest = "-"
        if seen and r.get("decode_gb_per_token"):
            top = max(seen)
            highest = f"{r['decode_tokens_per_s'] * r['decode_gb_per_token'] / top:.0%} of {top:.1f}"
        rows.append([r["pipeline"], str(r["visual_tokens"]), f"{r['ttft_s']:.2f}",
                     f"{r['prefill_s']:.2f}", opt("prefill_cold_s", ".2f"), opt("prefill_speedup", ".2f"),
                     opt("prefill_mac_ratio", ".3f"), opt("prefill_fraction_of_promised", ".1%"),
                     opt("prefill_speedup_paired", ".2f"), paired_fraction(r),
                     opt("prefill_cold_fraction_of_promised", ".1%"),
                     f"{r['decode_tokens_per_s']:.2f}", opt("decode_gb_per_token", ".2f"),
                     opt("bandwidth_gbps", ".1f"), opt("bound_tokens_per_s", ".2f"), opt("decode_fraction_of_bound", ".0%"),
                     highest, opt("weights_bandwidth_gbps", ".1f"), opt("decode_fraction_of_weights_read", ".0%"),
                     f"{r['peak_rss_mib'] / 1024:.1f}" if r.get("peak_rss_mib") else "-"])
    return markdown_table(head, rows)


# ---------------------------------------------------------------- main

def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        # Print the tables of an earlier run again: perf_suite.py --render perf.json
        with open(sys.argv[2]) as f:
            print(report(json.load(f)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="perf_suite.py --render perf.json prints an earlier run's tables.")
    ap.add_argument("--root", required=True)
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--tessera-unavailable", default="")
    ap.add_argument("--gemm-bench", required=True)
    ap.add_argument("--vit-bench", default="", help="build/tessera_vit_bench (paired section)")
    ap.add_argument("--paired-blocks", type=int, default=30)
    ap.add_argument("--paired-config", action="append", default=[],
                    help="LABEL=DIR=ONNX=BATCH for the paired section")
    ap.add_argument("--membw", required=True)
    ap.add_argument("--config", action="append", default=[],
                    help="LABEL=DIR=ONNX=BATCH for the peers section")
    ap.add_argument("--pruned-model", action="append", default=[], help="LABEL=DIR")
    ap.add_argument("--pipeline", action="append", default=[], help="NAME=YAML (pruned section)")
    ap.add_argument("--bf16-model", default="", help="LABEL=DIR[=ONNX] (ONNX: ORT fp32 in the same rounds)")
    ap.add_argument("--engines", default="tessera,ort,pytorch")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--heavy-iters", type=int, default=5)
    ap.add_argument("--heavy-warmup", type=int, default=2)
    ap.add_argument("--membw-passes", type=int, default=10)
    ap.add_argument("--membw-mib", type=int, default=1024)
    ap.add_argument("--llava", default="none", help="LLaVA model folder, or none")
    ap.add_argument("--llava-repeat", type=int, default=3)
    ap.add_argument("--llava-no-mmap", action="store_true", help="LLaVA weights read into memory (caption --no-mmap)")
    ap.add_argument("--llava-requests", type=int, default=3,
                    help="requests per LLaVA process; the first is reported as cold")
    ap.add_argument("--llava-new-tokens", type=int, default=16)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per process")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    a.engines = [e for e in a.engines.split(",") if e]
    a.cache = os.path.dirname(os.path.abspath(a.out))
    sections = [s for s in a.sections.split(",") if s]
    for s in sections:
        if s not in SECTIONS:
            ap.error(f"unknown section {s} ({', '.join(SECTIONS)})")
    env = compare.thread_env(a.threads)

    results = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": compare.cpu_model(), "logical_cpus": os.cpu_count(),
                    "kernel": platform.release()},
        "config": {"threads": a.threads, "rounds": a.rounds, "iters": a.iters,
                   "warmup": a.warmup, "heavy_iters": a.heavy_iters,
                   "heavy_warmup": a.heavy_warmup, "heavy_gflop": HEAVY_GFLOP,
                   "engines": a.engines, "sections": sections,
                   "thread_env": {k: env[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                       "MKL_NUM_THREADS")},
                   "pytorch_extra_env": {"OMP_WAIT_POLICY": "PASSIVE"},
                   "statistic": "median of per-round medians; spread = min-max of round medians"},
    }
    if "peers" in sections:
        configs = []
        for spec in a.config:
            label, model_dir, onnx, batch = spec.split("=")
            configs.append((label, model_dir, onnx, int(batch)))
        results["peers"] = section_peers(a, env, configs)
    if "pruned" in sections:
        models = [tuple(s.split("=", 1)) for s in a.pruned_model]
        pipelines = [tuple(s.split("=", 1)) for s in a.pipeline]
        results["pruned"] = section_pruned(a, env, models, pipelines)
    if "paired" in sections:
        configs = []
        for spec in a.paired_config:
            label, model_dir, onnx, batch = spec.split("=")
            configs.append((label, model_dir, onnx, int(batch)))
        results["paired"] = section_paired(a, env, configs) if a.vit_bench else [
            {"model": "-", "available": False, "reason": "no --vit-bench"}]
    if "bf16" in sections:
        if a.bf16_model:
            results["bf16"] = section_bf16(a, env, tuple(a.bf16_model.split("=", 2)))
        else:
            results["bf16"] = {"available": False, "reason": "no --bf16-model"}
    bandwidth = {}
    if "bandwidth" in sections or "llava" in sections:
        bandwidth = section_bandwidth(a, env)
        results["bandwidth"] = bandwidth
    if "llava" in sections:
        results["llava"] = section_llava(a, env, bandwidth)

    foreign = []
    for m in results.get("peers", []):
        foreign.append(m.get("max_foreign_cpu"))
    for m in results.get("pruned", []):
        foreign += [f for r in m["rows"].values() for f in r.get("round_foreign_cpu", [])]
    foreign += results.get("bandwidth", {}).get("round_foreign_cpu", [])
    foreign = [f for f in foreign if f is not None]
    results["max_foreign_cpu"] = max(foreign) if foreign else None

    os.makedirs(a.cache, exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(report(results))
    print(f"\nResults: {a.out}")


if __name__ == "__main__":
    main()
