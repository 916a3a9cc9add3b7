#!/usr/bin/env python3
"""Held-out accuracy and GMACs of the ShapeScenes vision towers, measured with
the engine: renders the held-out scenes, runs `tessera classify --logits` with
each tower, and scores the CLS head against the scenes' ground truth.

The head is [presence labels..., count 1..5] (tools/train_towers.py): 9 shape,
8 colour and 72 colour+shape presence labels, read as present when the logit
is positive, and the object count as the arg-max of the last five.

  /usr/bin/python3 tools/eval_towers.py --tessera build/tessera \\
      --towers models/shapescenes-towers --scenes 1000 --out docs/results/shapescenes/towers
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapescenes as ss  # noqa: E402

KINDS = ("vit", "biformer", "davit")
GROUPS = {"shape": (0, len(ss.SHAPES)),
          "colour": (len(ss.SHAPES), len(ss.SHAPES) + len(ss.COLOUR_NAMES)),
          "object": (len(ss.SHAPES) + len(ss.COLOUR_NAMES),
                     len(ss.SHAPES) + len(ss.COLOUR_NAMES) + len(ss.SHAPES) * len(ss.COLOUR_NAMES))}
LABELS = GROUPS["object"][1]


def targets(scene):
    t = np.zeros(LABELS, bool)
    for o in scene["objects"]:
        si, ci = ss.SHAPES.index(o["shape"]), ss.COLOUR_NAMES.index(o["colour"])
        t[si] = t[len(ss.SHAPES) + ci] = True
        t[GROUPS["object"][0] + si * len(ss.COLOUR_NAMES) + ci] = True
    return t, len(scene["objects"])


def f1(pred, truth):
    tp = float((pred & truth).sum())
    p, r = tp / max(pred.sum(), 1), tp / max(truth.sum(), 1)
    return 2 * p * r / max(p + r, 1e-12)


def score(logits, truth, counts):
    pred = logits[:, :LABELS] > 0
    out = {"presence_exact": float((pred == truth).all(1).mean()),
           "presence_label_accuracy": float((pred == truth).mean()),
           "presence_micro_f1": f1(pred, truth)}
    for name, (a, b) in GROUPS.items():
        out[f"{name}_f1"] = f1(pred[:, a:b], truth[:, a:b])
        out[f"{name}_exact"] = float((pred[:, a:b] == truth[:, a:b]).all(1).mean())
    out["count_accuracy"] = float((logits[:, LABELS:LABELS + 5].argmax(1) + 1 == counts).mean())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", default="build/tessera")
    ap.add_argument("--towers", default="models/shapescenes-towers")
    ap.add_argument("--scenes", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="towers-")
    subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapescenes.py"),
                    "--split", "heldout", "--count", str(args.scenes), "--out", work], check=True,
                   stdout=subprocess.DEVNULL)
    scenes = [json.loads(line) for line in open(os.path.join(work, "scenes.jsonl"))]
    images = [os.path.join(work, "images", f"heldout-{i:06d}.png") for i in range(len(scenes))]
    truth = np.stack([targets(s)[0] for s in scenes])
    counts = np.array([targets(s)[1] for s in scenes])
    base = {"labels_per_scene": float(truth.sum(1).mean()),
            "all_absent_label_accuracy": float((~truth).mean())}
    results = {}
    for kind in KINDS:
        cmd = [args.tessera, "classify", "--model", os.path.join(args.towers, kind), "--format", "jsonl", "--logits",
               "--top", "1"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        rows = [json.loads(line) for line in subprocess.run(cmd + images, check=True, capture_output=True,
                                                            text=True).stdout.splitlines()]
        logits = np.array([r["logits"] for r in rows], np.float32)
        res = score(logits, truth, counts)
        res["gmacs"] = rows[0]["gmacs"]
        res["ms_median"] = float(np.median([r["ms"] for r in rows]))
        plan = json.load(open(os.path.join(args.towers, kind, "config.json")))["model_args"]["block_attention"]
        res["blocks"] = [b["kind"] for b in plan]
        results[kind] = res
        print(kind, {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}, flush=True)
    record = {"scenes": args.scenes, "baseline": base, "towers": results}
    json.dump(record, open(args.out + ".json", "w"), indent=1)

    lines = [f"Held-out scenes: {args.scenes} (ShapeScenes `heldout` 0..{args.scenes - 1}); "
             f"{base['labels_per_scene']:.2f} of {LABELS} presence labels true per scene "
             f"(predicting all absent scores {base['all_absent_label_accuracy']:.3f} label accuracy).", "",
             "| tower | blocks | GMACs | presence micro-F1 | shape F1 | colour F1 | colour+shape F1 | "
             "colour+shape exact | count acc | ms (engine, median) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, r in results.items():
        blocks = ", ".join(r["blocks"])
        lines.append(f"| {kind} | {blocks} | {r['gmacs']:.4f} | {r['presence_micro_f1']:.3f} | {r['shape_f1']:.3f} | "
                     f"{r['colour_f1']:.3f} | {r['object_f1']:.3f} | {r['object_exact']:.3f} | "
                     f"{r['count_accuracy']:.3f} | {r['ms_median']:.1f} |")
    open(args.out + ".md", "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
