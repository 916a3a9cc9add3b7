#!/usr/bin/env python3
"""Engines timed in short alternating blocks, each in one long-lived process.

  python3 bench/paired.py --ref ort-f32 [--blocks 30] [--iters 5] [--warmup 1]
      [--gap-ms 50] [--raw FILE] \\
      --engine 'tessera-f32=taskset -c 0,1 build/tessera_vit_bench --model M --serve' \\
      --engine 'ort-f32=taskset -c 0,1 python3 bench/ort_bench.py --onnx M.onnx --serve'

Why: on a shared host the cores' speed moves by tens of percent within a
second (another tenant, a taken vCPU), so engines timed one process after the
other (bench/compare.py, bench/device/run.sh's rounds) meet different
machines, and their per-round ratios spread 0.6-1.1x for the same binaries.
Here every engine loads once and then answers on stdin; the driver asks each
in turn for `warmup` untimed and `iters` timed forwards, rotating the order
every block, and compares each engine's block median with the reference
engine's block median from the same block: two measurements a few hundred
milliseconds apart. Between blocks it sleeps `gap_ms` so that the process
that just ran has parked its worker threads before the next one starts
(libgomp spins ~300k pauses before sleeping, OpenBLAS's threads 2^28
cycles: ~0.1 s; with a 50 ms gap PyTorch on OpenBLAS still held the cores
when the next engine began).

Protocol (bench/vit_bench.cpp --serve, bench/ort_bench.py --serve,
bench/export_vit_onnx.py bench --serve, bench/ort_bench.js --serve): the
engine prints one JSON object when it is ready (its own facts: check,
linear, parity ...), then for each line "W N" it reads, runs W untimed and N
timed forwards and prints {"ms": [N times]}; it exits at end of input.

Prints one JSON object: per engine, all timed forwards' p50 and min, and
against the reference the median of the per-block ratios with their
quartiles and range; --raw keeps every block's times.

--probe NAME names an engine that measures the host rather than a model
(`tessera_gemm_bench --peak --serve`: register-only multiply-adds on the same
cores, its facts giving `gflop_per_run`). Its block rate says how fast the
host let those cores run in that block, and each engine's ratios are also
given over the blocks where that rate was in its top and bottom quarter, so a
figure can be read against the machine it met. If the probe's median block
ran below 60% of its fastest run, the result carries a warning (also on
stderr): the engines met a busy machine, or one of them keeps spinning
between blocks (OMP_WAIT_POLICY=active does: its idle threads then take the
cores from every other engine, and all its ratios are void).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time


def serve(header, run_once):
    """The engine's side of the protocol, for Python peers."""
    print(json.dumps(header), flush=True)
    for line in sys.stdin:
        fields = line.split()
        if not fields:
            continue
        warmup, iters = int(fields[0]), int(fields[1])
        for _ in range(warmup):
            run_once()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter_ns()
            run_once()
            times.append((time.perf_counter_ns() - t0) / 1e6)
        print(json.dumps({"ms": times}), flush=True)


def quantile(sorted_vals, q):
    """Linear interpolation between order statistics (numpy's default)."""
    pos = (len(sorted_vals) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


class Engine:
    def __init__(self, name, command):
        self.name, self.command = name, command
        self.proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.header = self._reply("starting")
        self.blocks = []

    def _reply(self, what):
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"{self.name}: exited with status {code} while {what} ({self.command})")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise RuntimeError(f"{self.name}: not JSON while {what}: {line[:200]!r}")

    def block(self, warmup, iters):
        try:
            self.proc.stdin.write(f"{warmup} {iters}\n")
            self.proc.stdin.flush()
        except OSError:  # it exited: a broken pipe
            raise RuntimeError(f"{self.name}: exited with status {self.proc.wait()} before a block ({self.command})")
        times = self._reply("timing")["ms"]
        if len(times) != iters:
            raise RuntimeError(f"{self.name}: answered {len(times)} times for {iters} forwards")
        self.blocks.append(times)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def summary(engines, ref, probe):
    out = {}
    ref_medians = [statistics.median(b) for b in ref.blocks]
    ref_p50 = quantile(sorted(t for b in ref.blocks for t in b), 0.5)
    host = None
    if probe:
        gflop = probe.header.get("gflop_per_run")
        if not isinstance(gflop, (int, float)) or gflop <= 0:
            raise RuntimeError(f"{probe.name}: its facts lack gflop_per_run, so it cannot probe the host")
        host = [gflop / (statistics.median(b) * 1e-3) for b in probe.blocks]
        ranked = sorted(range(len(host)), key=host.__getitem__)
        quarter = max(1, len(host) // 4)
        slow, fast = ranked[:quarter], ranked[-quarter:]
    for e in engines:
        every = sorted(t for b in e.blocks for t in b)
        row = {"ms_p50": quantile(every, 0.5), "ms_min": every[0], "forwards": len(every), "header": e.header}
        if e is probe:
            rates = sorted(host)
            best = probe.header["gflop_per_run"] / (every[0] * 1e-3)
            row["host_gflops"] = {"median": quantile(rates, 0.5), "min": rates[0], "max": rates[-1], "best_run": best,
                                  "fast_quarter": quantile(sorted(host[i] for i in fast), 0.5),
                                  "slow_quarter": quantile(sorted(host[i] for i in slow), 0.5)}
            if row["host_gflops"]["median"] < 0.6 * best:
                row["warning"] = (f"the probe's median block ran at {row['host_gflops']['median']:.0f} GFLOP/s, "
                                  f"below 60% of its best run ({best:.0f}): a busy host or an engine spinning "
                                  "between blocks; these ratios do not describe the engines")
                print(f"paired.py: warning: {row['warning']}", file=sys.stderr)
        elif e is not ref:
            per_block = [statistics.median(b) / r for b, r in zip(e.blocks, ref_medians)]
            ratios = sorted(per_block)
            row["ratio_to_ref"] = {"median": quantile(ratios, 0.5), "q25": quantile(ratios, 0.25),
                                   "q75": quantile(ratios, 0.75), "min": ratios[0], "max": ratios[-1],
                                   "of_p50": row["ms_p50"] / ref_p50, "blocks": len(ratios)}
            if host:
                row["ratio_to_ref"]["host_fast_quarter"] = quantile(sorted(per_block[i] for i in fast), 0.5)
                row["ratio_to_ref"]["host_slow_quarter"] = quantile(sorted(per_block[i] for i in slow), 0.5)
        out[e.name] = row
    return out


TABLE_HEAD = ("| model | engine | p50 ms | min ms | / reference, per block: median (quartiles; range) "
              "| p50 / reference p50 | per block, host fastest / slowest quarter |\n"
              "|---|---|---:|---:|---:|---:|---:|")


def table_rows(label, result):
    """Markdown rows (under TABLE_HEAD) for one result of this script."""
    rows = []
    for name, e in result["engines"].items():
        q, host = e.get("ratio_to_ref"), e.get("host_gflops")
        if q:
            per_block = (f"{q['median']:.3f}x ({q['q25']:.3f}-{q['q75']:.3f}; {q['min']:.2f}-{q['max']:.2f}), "
                         f"{q['blocks']} blocks")
            quarters = f"{q['host_fast_quarter']:.3f}x / {q['host_slow_quarter']:.3f}x" if "host_fast_quarter" in q else "-"
            of_p50 = f"{q['of_p50']:.3f}x"
        elif host:
            per_block = f"host probe: {host['median']:.0f} GFLOP/s per block ({host['min']:.0f}-{host['max']:.0f})"
            if "warning" in e:
                per_block += " **WARNING: " + e["warning"] + "**"
            quarters = f"{host['fast_quarter']:.0f} / {host['slow_quarter']:.0f} GFLOP/s"
            of_p50 = "-"
        else:
            per_block, quarters, of_p50 = "reference", "-", "-"
        rows.append(f"| {label} | {name} | {e['ms_p50']:.2f} | {e['ms_min']:.2f} | {per_block} | {of_p50} | {quarters} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", action="append", required=True, metavar="NAME=COMMAND",
                    help="a shell command that speaks the protocol above")
    ap.add_argument("--ref", required=True, help="the engine the others are divided by")
    ap.add_argument("--probe", help="the engine that measures the host (see above)")
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--iters", type=int, default=5, help="timed forwards per engine and block")
    ap.add_argument("--warmup", type=int, default=1, help="untimed forwards before them")
    ap.add_argument("--gap-ms", type=float, default=200.0)
    ap.add_argument("--raw", help="write every block's times here (JSON)")
    ap.add_argument("--table", metavar="LABEL", help="also print a markdown table to stderr, rows labelled LABEL")
    a = ap.parse_args()
    if a.blocks < 1 or a.iters < 1 or a.warmup < 0 or a.gap_ms < 0:
        ap.error("--blocks and --iters must be positive, --warmup and --gap-ms not negative")
    specs = []
    for spec in a.engine:
        name, sep, command = spec.partition("=")
        if not sep or not name or not command.strip():
            ap.error(f"--engine {spec!r}: expected NAME=COMMAND")
        if name in (n for n, _ in specs):
            ap.error(f"--engine {name}: named twice")
        specs.append((name, command))
    for flag, name in (("--ref", a.ref), ("--probe", a.probe)):
        if name is not None and name not in (n for n, _ in specs):
            ap.error(f"{flag} {name}: no engine of that name")
    if a.probe == a.ref:
        ap.error("--probe and --ref name the same engine")
    engines = []
    try:
        for name, command in specs:  # one at a time: loading is not timed, but should not overlap either
            engines.append(Engine(name, command))
        for k in range(a.blocks):
            shift = k % len(engines)
            for e in engines[shift:] + engines[:shift]:
                time.sleep(a.gap_ms / 1000.0)
                e.block(a.warmup, a.iters)
        ref = next(e for e in engines if e.name == a.ref)
        probe = next((e for e in engines if e.name == a.probe), None)
        result = {"ref": a.ref, "probe": a.probe, "blocks": a.blocks, "iters": a.iters, "warmup": a.warmup,
                  "gap_ms": a.gap_ms, "engines": summary(engines, ref, probe)}
    except RuntimeError as err:
        sys.exit(f"paired.py: {err}")
    finally:
        for e in engines:
            e.close()
    if a.raw:
        with open(a.raw, "w") as f:
            json.dump({e.name: e.blocks for e in engines}, f)
    print(json.dumps(result))
    if a.table:
        print("\n".join([TABLE_HEAD] + table_rows(a.table, result)), file=sys.stderr)


if __name__ == "__main__":
    main()
