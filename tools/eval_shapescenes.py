#!/usr/bin/env python3
"""Held-out ShapeScenes quality of a LLaVA model, measured with the engine:
renders the held-out split, asks `tessera caption --requests` for a caption
and the POPE-style / counting questions of every scene, and scores the
answers (docs/shapescenes.md defines the metrics).

  /usr/bin/python3 tools/eval_shapescenes.py --tessera build/tessera \\
      [--model models/shapescenes-llava] [--pipeline FILE.yaml] [--scenes 1000] --out OUT
writes OUT/answers.jsonl, OUT/quality.json and prints a Markdown table.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapescenes as ss  # noqa: E402


def render(folder, count):
    if os.path.exists(os.path.join(folder, "questions.jsonl")):
        with open(os.path.join(folder, "scenes.jsonl")) as f:
            if sum(1 for _ in f) == count:
                return
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "shapescenes.py"), "--split", "heldout",
                    "--count", str(count), "--out", folder], check=True)


def score(scenes, questions, answers):
    tp = fp = fn = 0
    otp = ofp = ofn = 0
    chair_s = mentions = hallucinated = 0
    for s in scenes:
        said = ss.parse_caption(answers[f"caption:{s['index']}"]["text"])
        truth = [(o["size"], o["colour"], o["shape"], o["position"]) for o in s["objects"]]
        hit = sum(min(said.count(t), truth.count(t)) for t in set(truth))
        tp, fp, fn = tp + hit, fp + len(said) - hit, fn + len(truth) - hit
        # Objects as colour + shape (what CHAIR counts): mentioned vs present.
        said_o = [(m[1], m[2]) for m in said]
        truth_o = [(t[1], t[2]) for t in truth]
        ohit = sum(min(said_o.count(t), truth_o.count(t)) for t in set(truth_o))
        otp, ofp, ofn = otp + ohit, ofp + len(said_o) - ohit, ofn + len(truth_o) - ohit
        bad = [m for m in said_o if m not in set(truth_o)]
        chair_s += bool(bad)
        mentions, hallucinated = mentions + len(said_o), hallucinated + len(bad)

    def f1(p, r):
        return 2 * p * r / (p + r) if p + r else 0.0

    p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
    op, orr = otp / max(1, otp + ofp), otp / max(1, otp + ofn)
    res = {"scenes": len(scenes), "caption_precision": p, "caption_recall": r, "caption_f1": f1(p, r),
           "object_precision": op, "object_recall": orr, "object_f1": f1(op, orr),
           "chair_s": chair_s / max(1, len(scenes)), "chair_i": hallucinated / max(1, mentions)}
    positives = [q for q in questions if q["type"] == "exist" and q["negative"] is None]
    for kind in ("random", "popular", "adversarial"):
        qs = positives + [q for q in questions if q["type"] == "exist" and q["negative"] == kind]
        said_yes = [answers[q["id"]]["text"].strip().lower().startswith("yes") for q in qs]
        truth_yes = [q["answer"] == "yes" for q in qs]
        tpy = sum(a and t for a, t in zip(said_yes, truth_yes))
        prec, rec = tpy / max(1, sum(said_yes)), tpy / max(1, sum(truth_yes))
        res[f"pope_{kind}"] = {"accuracy": sum(a == t for a, t in zip(said_yes, truth_yes)) / len(qs),
                               "precision": prec, "recall": rec, "f1": f1(prec, rec),
                               "yes_ratio": sum(said_yes) / len(qs)}
    counts = [q for q in questions if q["type"] == "count"]
    res["count_accuracy"] = sum(answers[q["id"]]["text"].strip().lower() == q["answer"] for q in counts) / max(
        1, len(counts))
    n = len(answers)
    res["mean_visual_tokens"] = sum(a["visual_tokens"] for a in answers.values()) / n
    res["mean_ms_first_token"] = sum(a["ms"]["first_token"] for a in answers.values()) / n
    return res


def table(res):
    rows = [("caption F1 (size, colour, shape, position)", res["caption_f1"]),
            ("caption precision / recall", f"{res['caption_precision']:.3f} / {res['caption_recall']:.3f}"),
            ("object F1 (colour + shape)", res["object_f1"]), ("CHAIR_s", res["chair_s"]), ("CHAIR_i", res["chair_i"])]
    for kind in ("random", "popular", "adversarial"):
        q = res[f"pope_{kind}"]
        rows.append((f"yes/no {kind}: accuracy / F1 / yes-ratio",
                     f"{q['accuracy']:.3f} / {q['f1']:.3f} / {q['yes_ratio']:.3f}"))
    rows.append(("count accuracy", res["count_accuracy"]))
    out = [f"| metric ({res['scenes']} held-out scenes) | value |", "|---|---|"]
    for name, v in rows:
        out.append(f"| {name} | {v:.3f} |" if isinstance(v, float) else f"| {name} | {v} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", default="build/tessera")
    ap.add_argument("--model", default="")
    ap.add_argument("--pipeline", default="")
    ap.add_argument("--scenes", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--data", default="", help="held-out folder (rendered when missing); default OUT/heldout")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = args.data or os.path.join(args.out, "heldout")
    render(data, args.scenes)
    scenes = [json.loads(l) for l in open(os.path.join(data, "scenes.jsonl"))]
    questions = [json.loads(l) for l in open(os.path.join(data, "questions.jsonl"))]
    requests = os.path.join(data, "requests.jsonl")
    with open(requests, "w") as f:
        for s in scenes:
            f.write(json.dumps({"id": f"caption:{s['index']}", "image": "images/" + s["image"],
                                "prompt": ss.CAPTION_PROMPT}) + "\n")
        for q in questions:
            f.write(json.dumps({"id": q["id"], "image": "images/" + q["image"], "prompt": q["prompt"]}) + "\n")
    cmd = [args.tessera, "caption", "--requests", requests, "--max-new-tokens", "80"]
    if args.model:
        cmd += ["--model", args.model]
    if args.pipeline:
        cmd += ["--pipeline", args.pipeline]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    answers_path = os.path.join(args.out, "answers.jsonl")
    with open(answers_path, "w") as f:
        subprocess.run(cmd, check=True, stdout=f)
    answers = {a["id"]: a for a in map(json.loads, open(answers_path))}
    res = score(scenes, questions, answers)
    json.dump(res, open(os.path.join(args.out, "quality.json"), "w"), indent=1)
    print(table(res))


if __name__ == "__main__":
    main()
