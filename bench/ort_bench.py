#!/usr/bin/env python3
"""ONNX Runtime peer through its Python package, for machines that have
`onnxruntime` for Python but no Node.js (bench/device/run.sh; the local
harness uses bench/ort_bench.js with the npm package's C library).

  python3 bench/ort_bench.py --onnx M.onnx [--batch 1] [--iters 20] [--warmup 5]
      [--threads 2] [--ref M.onnx.ref_logits.npy] [--serve]

Times only `session.run` on the synthetic input export_vit_onnx.py used
(uniform in [-1, 1), seed 0) and prints one JSON object shaped like
`tessera bench --format json`. With --ref it first checks ORT's logits
against the PyTorch logits saved at export (max |diff| <= 1e-3 x max(1,
max |ref|)), so a broken export cannot give a fast but meaningless figure.
With --serve it prints its facts and then answers bench/paired.py.
"""
import argparse
import json
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ref", default="")
    ap.add_argument("--serve", action="store_true", help="answer bench/paired.py after the warm-up")
    a = ap.parse_args()
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    x = np.random.default_rng(0).uniform(-1.0, 1.0, size=(a.batch, shape[1], shape[2], shape[3])).astype(np.float32)
    out = sess.run(None, {"pixel_values": x})[0]
    parity = None
    if a.ref:
        ref = np.load(a.ref)
        parity = float(np.abs(out - ref).max())
        if parity > 1e-3 * max(1.0, float(np.abs(ref).max())):
            raise SystemExit(f"ort_bench.py: ORT's logits differ from PyTorch's by {parity}")
    for _ in range(a.warmup):
        sess.run(None, {"pixel_values": x})
    if a.serve:
        from paired import serve
        serve({"batch": a.batch, "threads": a.threads, "engine": "onnxruntime", "version": ort.__version__,
               "parity": parity}, lambda: sess.run(None, {"pixel_values": x}))
        return
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter_ns()
        sess.run(None, {"pixel_values": x})
        times.append((time.perf_counter_ns() - t0) / 1e6)
    print(json.dumps({"ms_p50": float(np.percentile(times, 50)), "ms_p90": float(np.percentile(times, 90)),
                      "ms_min": min(times), "batch": a.batch, "threads": a.threads, "iters": a.iters,
                      "engine": "onnxruntime", "version": ort.__version__, "parity": parity}))


if __name__ == "__main__":
    main()
