#!/usr/bin/python3
"""Runs the alternating benchmark rounds for bench/run.sh and prints the table.

Each round runs every engine once, as a fresh process, on the same model,
batch and thread count: Tessera (`build/tessera bench ... --format json`),
ONNX Runtime (bench/ort_bench.js) and PyTorch (bench/export_vit_onnx.py bench).
Each process warms up, times N iterations and prints one JSON object whose
`ms_p50` is that round's median. The engine order rotates from round to round
so none always runs first. The table reports the median of the round medians
and their spread (min-max). Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ENGINES = ("tessera", "ort", "pytorch")
LABELS = {"tessera": "Tessera", "ort": "ORT", "pytorch": "PyTorch"}


def cpu_busy_fraction(interval=1.0):
    """Share of all CPU time that was not idle over `interval` seconds."""
    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return idle, sum(vals)
    try:
        i0, t0 = sample()
        time.sleep(interval)
        i1, t1 = sample()
        return 1.0 - (i1 - i0) / max(1, t1 - t0)
    except OSError:
        return None


def _proc_stat_seconds():
    """(busy, steal) CPU seconds of the whole machine so far, all CPUs; busy
    excludes idle, iowait and steal (time the hypervisor gave elsewhere)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    vals += [0] * (8 - len(vals))
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(vals[:7]) - vals[3] - vals[4]) / hz, vals[7] / hz


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_one(cmd, env, timeout, key="ms_p50"):
    """Runs one engine process; returns (result dict, None) or (None, reason).
    The result is the last JSON object on stdout with a numeric `key`. It
    gets `foreign_cpu`: the share of the machine's CPU time used by other
    processes while this one ran (machine busy time minus the child's), and
    `steal_cpu`: the share the hypervisor withheld from this VM."""
    try:
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        (busy0, steal0), wall0 = _proc_stat_seconds(), time.monotonic()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        (busy1, steal1), wall1 = _proc_stat_seconds(), time.monotonic()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    except FileNotFoundError as e:
        return None, f"not found: {e.filename}"
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout}s"
    if p.returncode != 0:
        err = (p.stderr.strip() or p.stdout.strip()).splitlines()
        tail = err[-1] if err else ""
        return None, f"exit {p.returncode}" + (f": {tail[:160]}" if tail else "")
    for line in reversed(p.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj.get(key), (int, float)):
                child = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
                cap = (wall1 - wall0) * (os.cpu_count() or 1)
                obj["foreign_cpu"] = max(0.0, min(1.0, (busy1 - busy0 - child) / cap)) if cap > 0 else None
                obj["steal_cpu"] = max(0.0, min(1.0, (steal1 - steal0) / cap)) if cap > 0 else None
                return obj, None
    return None, f"no JSON object with {key} on stdout"


def fmt_ms(v):
    return f"{v:.2f}" if v < 100 else f"{v:.1f}"


def summarise(rounds, key="ms_p50"):
    meds = [r[key] for r in rounds]
    return {"p50": statistics.median(meds), "min": min(meds), "max": max(meds),
            "round_p50": meds, "round_p90": [r.get("ms_p90") for r in rounds],
            "round_foreign_cpu": [r.get("foreign_cpu") for r in rounds],
            "round_steal_cpu": [r.get("steal_cpu") for r in rounds]}


class Job:
    """One process to run once per round: `command(round)` gives its argv
    (the round lets the first round add one-off checks); `key` names the
    number its JSON output must carry."""

    def __init__(self, key, label, command, env, result_key="ms_p50"):
        self.key, self.label, self.command, self.env = key, label, command, env
        self.result_key = result_key


def alternate(name, jobs, rounds, timeout, skip=None, fmt=None):
    """Runs every job once per round, each as a fresh process, the order
    rotating from round to round so none always runs first. Returns
    ({job key: [result, ...]}, {job key: reason it stopped}). Jobs in `skip`
    ({key: reason}) are not run. `fmt(result)` gives the progress note."""
    per = {j.key: [] for j in jobs}
    reasons = dict(skip or {})
    for r in range(rounds):
        order = jobs[r % len(jobs):] + jobs[:r % len(jobs)]
        for j in order:
            if j.key in reasons:
                continue
            res, why = run_one(j.command(r), j.env, timeout, j.result_key)
            if res is None:
                reasons[j.key] = why
                print(f"  {name} round {r + 1}: {j.label} failed ({why})", file=sys.stderr)
                continue
            per[j.key].append(res)
            fc = res.get("foreign_cpu")
            shown = fmt(res) if fmt else f"p50 {res['ms_p50']:8.2f} ms"
            print(f"  {name} round {r + 1}/{rounds}: {j.label:8s} {shown}" +
                  (f"  (other processes: {fc:.0%} CPU, steal {res.get('steal_cpu') or 0:.0%})"
                   if fc is not None else ""),
                  file=sys.stderr, flush=True)
    return per, reasons


def markdown_table(head, rows):
    """A Markdown table with padded columns, as a string."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [line(r) for r in rows])


def thread_env(threads):
    """The environment every engine gets: T threads for OpenMP and the BLASes."""
    T = str(threads)
    return dict(os.environ, OMP_NUM_THREADS=T, OPENBLAS_NUM_THREADS=T, MKL_NUM_THREADS=T)


def engine_envs(threads):
    """{engine: environment}. Debian's PyTorch runs its own ops on libgomp
    threads and its GEMMs on OpenBLAS's pthreads. With libgomp's default
    spin-wait the idle OpenMP threads hold the cores the BLAS threads need:
    on 2 cores that makes it 2-3x slower with a p90 several times the p50.
    Passive waiting is PyTorch's best setting here, so it is the one compared
    against."""
    env = thread_env(threads)
    out = {e: env for e in ENGINES}
    out["pytorch"] = dict(env, OMP_WAIT_POLICY="PASSIVE")
    return out


def engine_command(engine, root, tessera, model_dir, onnx, batch, iters, warmup, threads,
                   first_round=False):
    """argv of one engine's timing process (see bench/README.md). ORT checks
    its logits against PyTorch's every time and, in the first round, against
    Tessera's on the parity image when export_vit_onnx.py parity saved them
    after the current export."""
    T = str(threads)
    bench_dir = os.path.join(root, "bench")
    if engine == "tessera":
        cmd = [tessera, "bench", "--model", model_dir, "--batch", str(batch),
               "--iters", str(iters), "--threads", T, "--format", "json"]
        # Tessera's own default warm-up is 5 iterations, the same as the peers'.
        return cmd + (["--warmup", str(warmup)] if warmup != 5 else [])
    if engine == "ort":
        cmd = ["node", os.path.join(bench_dir, "ort_bench.js"), "--onnx", onnx,
               "--batch", str(batch), "--iters", str(iters), "--warmup", str(warmup),
               "--threads", T, "--ort-dir", os.path.join(bench_dir, ".cache", "ort")]
        ref = onnx + ".ref_logits.npy"
        if os.path.exists(ref):
            cmd += ["--ref", ref]
        tref = onnx + ".tessera_logits.npy"
        if first_round and os.path.exists(tref) and os.path.getmtime(tref) >= os.path.getmtime(onnx):
            cmd += ["--check-tessera", tref]
        return cmd
    return ["/usr/bin/python3", os.path.join(bench_dir, "export_vit_onnx.py"), "bench",
            "--model", model_dir, "--batch", str(batch), "--iters", str(iters),
            "--warmup", str(warmup), "--threads", T]


def read_parity(onnx):
    """Tessera-vs-PyTorch result that run.sh saved next to the ONNX file
    (export_vit_onnx.py parity), or None."""
    try:
        with open(onnx + ".parity.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def summarise_engines(engines, per, reasons):
    """{"engines": {engine: summary or {available: False, reason}},
    "ratio_tessera_<peer>": Tessera p50 / peer p50, "max_foreign_cpu"}."""
    out = {"engines": {}}
    for e in engines:
        if e in reasons and not per[e]:
            out["engines"][e] = {"available": False, "reason": reasons[e]}
            continue
        s = summarise(per[e])
        s["available"] = True
        s["rounds_completed"] = len(per[e])
        if e in reasons:
            s["note"] = f"failed after {len(per[e])} rounds: {reasons[e]}"
        last = per[e][-1]
        for k in ("gmacs", "parity", "version"):
            if k in last:
                s[k] = last[k]
        checked = [r["parity_tessera"] for r in per[e] if "parity_tessera" in r]
        if checked:
            s["parity_tessera"] = checked[0]
        out["engines"][e] = s
    ts = out["engines"].get("tessera", {})
    for peer in ("ort", "pytorch"):
        ps = out["engines"].get(peer, {})
        if ts.get("available") and ps.get("available"):
            out[f"ratio_tessera_{peer}"] = ts["p50"] / ps["p50"]
    fs = [f for s in out["engines"].values() for f in s.get("round_foreign_cpu", [])
          if f is not None]
    out["max_foreign_cpu"] = max(fs) if fs else None
    return out


def parity_summary(entry, onnx):
    """The output checks behind one model's figures, each {max_abs_diff,
    max_abs_ref} or None when not run: ORT vs PyTorch (synthetic input,
    every round), ORT vs Tessera (parity image, first round) and Tessera vs
    PyTorch (parity image, run.sh's parity step)."""
    ort = entry["engines"].get("ort", {})
    tp = read_parity(onnx)
    return {"ort_vs_pytorch": ort.get("parity"), "ort_vs_tessera": ort.get("parity_tessera"),
            "tessera_vs_pytorch": tp}


def parity_note(parity):
    """Short text for the table: max |diff| / max(1, max |ref|) per check."""
    parts = []
    for key, label in (("tessera_vs_pytorch", "T-PT"), ("ort_vs_tessera", "ORT-T"),
                       ("ort_vs_pytorch", "ORT-PT")):
        p = parity.get(key)
        if not p:
            continue
        rel = p["max_abs_diff"] / max(1.0, p["max_abs_ref"])
        parts.append(f"{label} {rel:.0e}" + ("" if p.get("ok", True) else " FAIL"))
    return ", ".join(parts) if parts else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="repository root")
    ap.add_argument("--tessera", required=True, help="path of the tessera binary")
    ap.add_argument("--tessera-unavailable", default="",
                    help="reason to skip Tessera without running it (e.g. build failed)")
    ap.add_argument("--model", action="append", required=True,
                    help="NAME=DIR=ONNX (timm folder for Tessera/PyTorch, .onnx for ORT)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--out", required=True, help="results JSON path")
    a = ap.parse_args()

    engines = [e for e in a.engines.split(",") if e]
    for e in engines:
        if e not in ENGINES:
            ap.error(f"unknown engine {e}")
    env = thread_env(a.threads)
    engine_env = engine_envs(a.threads)

    def command(engine, model_dir, onnx, first_round=False):
        return engine_command(engine, a.root, a.tessera, model_dir, onnx, a.batch, a.iters, a.warmup,
                              a.threads, first_round)

    results = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
                    "kernel": platform.release()},
        "config": {"batch": a.batch, "threads": a.threads, "iters": a.iters,
                   "peer_warmup": a.warmup, "rounds": a.rounds, "engines": engines,
                   "thread_env": {k: env[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                       "MKL_NUM_THREADS")},
                   "pytorch_extra_env": {"OMP_WAIT_POLICY": "PASSIVE"},
                   "statistic": "median of per-round medians; spread = min-max of round medians"},
        "models": [],
    }

    for spec in a.model:
        name, model_dir, onnx = spec.split("=", 2)
        busy = cpu_busy_fraction()
        if busy is not None and busy > 0.15:
            print(f"warning: {busy:.0%} of the CPU was busy with other work just before "
                  f"{name}; figures may be inflated", file=sys.stderr)
        skip = {}
        if "tessera" in engines and a.tessera_unavailable:
            skip["tessera"] = a.tessera_unavailable
        jobs = [Job(e, LABELS[e], lambda r, e=e: command(e, model_dir, onnx, r == 0), engine_env[e])
                for e in engines]
        per, reasons = alternate(name, jobs, a.rounds, a.timeout, skip)
        busy_after = cpu_busy_fraction(0.5)

        entry = {"model": name, "model_dir": model_dir, "onnx": onnx, "batch": a.batch,
                 "threads": a.threads, "cpu_busy_before": busy, "cpu_busy_after": busy_after}
        entry.update(summarise_engines(engines, per, reasons))
        entry["parity"] = parity_summary(entry, onnx)
        results["models"].append(entry)

    foreign = [f for m in results["models"] for s in m["engines"].values()
               for f in s.get("round_foreign_cpu", []) if f is not None]
    results["max_foreign_cpu"] = max(foreign) if foreign else None
    if foreign and max(foreign) > 0.10:
        print(f"warning: other processes used up to {max(foreign):.0%} of the CPU during "
              "some rounds; those figures are inflated (see round_foreign_cpu in the "
              "results)", file=sys.stderr)

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")

    # ---- table
    head = ["model", "batch", "threads"] + [f"{LABELS[e]} ms p50 (min-max)" for e in engines]
    ratio_cols = [p for p in ("ort", "pytorch") if p in engines and "tessera" in engines]
    head += [f"Tessera/{LABELS[p]}" for p in ratio_cols] + ["parity (rel. max diff)", "other CPU (max)"]
    rows = []
    for m in results["models"]:
        row = [m["model"], str(m["batch"]), str(m["threads"])]
        for e in engines:
            s = m["engines"][e]
            if not s["available"]:
                row.append(f"{e}: unavailable ({s['reason']})")
            else:
                row.append(f"{fmt_ms(s['p50'])} ({fmt_ms(s['min'])}-{fmt_ms(s['max'])})")
        for p in ratio_cols:
            v = m.get(f"ratio_tessera_{p}")
            row.append(f"{v:.2f}x" if v is not None else "-")
        row.append(parity_note(m["parity"]))
        f = m["max_foreign_cpu"]
        row.append("-" if f is None else f"{f:.0%}" + (" (noisy)" if f > 0.10 else ""))
        rows.append(row)
    print()
    print(markdown_table(head, rows))
    print(f"\n{a.rounds} rounds x {a.iters} iterations per engine, alternating; "
          f"p50 = median of round medians. Results: {a.out}")


if __name__ == "__main__":
    main()
