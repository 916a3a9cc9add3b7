#!/usr/bin/env python3
"""Compare the top-k predictions of two JSONL result files, image by image.

Typical use: the float64 reference (tools/reference_vit.py) against the C++
engine's output on the same images::

    /usr/bin/python3 tools/compare_topk.py ref.jsonl engine.jsonl [--min-agreement 99.5]

Both files hold one JSON object per line with an ``"image"`` name.  Two line
shapes are understood, on either side:

* reference style: ``{"image": ..., "top5": [ids], "probs": [probs], "label": int|null}``
* engine style:    ``{"image": ..., "top": [{"class": int, "label": str, "prob": float}, ...],
  "label": int (optional)}``

Images are matched by file name (the part after the last '/'), so one side may
carry full paths.  The report gives the number of matched images, the per-image
top-1 agreement (and every image where the two top-1 classes differ, with both
probabilities), and each side's top-1 / top-5 accuracy over the images whose
ground-truth label is known (a side's own ``"label"``, else the other side's).

Exit status: 0 when agreement >= --min-agreement, 1 when below it (or when no
image matched), 2 on unreadable input.
"""

import argparse
import json
import os
import sys


class Record:
    """One image's prediction: ranked class ids, their probabilities, label."""

    __slots__ = ("image", "classes", "probs", "label")

    def __init__(self, image, classes, probs, label):
        self.image = image
        self.classes = classes
        self.probs = probs
        self.label = label


def parse_line(obj, where):
    """Turn one decoded JSON object (either line shape) into a Record."""
    if not isinstance(obj, dict) or "image" not in obj:
        raise ValueError(f"{where}: no 'image' field")
    if "top" in obj:  # engine style
        top = obj["top"]
        classes = [int(e["class"]) for e in top]
        probs = [float(e["prob"]) if e.get("prob") is not None else None for e in top]
    elif "top5" in obj:  # reference style
        classes = [int(c) for c in obj["top5"]]
        probs = [float(p) for p in obj.get("probs", [None] * len(classes))]
        if len(probs) != len(classes):
            raise ValueError(f"{where}: 'probs' and 'top5' differ in length")
    else:
        raise ValueError(f"{where}: neither 'top' nor 'top5'")
    if not classes:
        raise ValueError(f"{where}: empty prediction list")
    label = obj.get("label")
    # A top-level label is the ground-truth class id; anything else (e.g. a
    # class-name string) is not a usable label.
    if isinstance(label, bool) or not isinstance(label, int):
        label = None
    return Record(str(obj["image"]), classes, probs, label)


def load_jsonl(path):
    """Read a JSONL file into {image basename: Record}."""
    records = {}
    dups = 0
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not JSON ({e})")
            if isinstance(obj, dict) and "image" not in obj:
                continue  # tolerate summary/metadata lines without an image
            rec = parse_line(obj, where)
            key = rec.image.replace("\\", "/").rsplit("/", 1)[-1]
            if key in records:
                dups += 1
            records[key] = rec
    if dups:
        print(f"warning: {path}: {dups} duplicate image names (last one kept)", file=sys.stderr)
    return records


def read_class_names(path):
    """imagenet-classes.tsv: class_index, wnid, names -> {id: first short name}."""
    names = {}
    with open(path, "r", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        i_idx = header.index("class_index") if "class_index" in header else 0
        i_nam = header.index("names") if "names" in header else len(header) - 1
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) > max(i_idx, i_nam):
                names[int(cols[i_idx])] = cols[i_nam].split(",")[0].strip()
    return names


def fmt_prob(p):
    return "  n/a " if p is None else f"{p:.4f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", help="JSONL of the reference (e.g. reference_vit.py --out)")
    ap.add_argument("engine", help="JSONL of the engine")
    ap.add_argument("--min-agreement", type=float, default=99.5,
                    help="minimum top-1 agreement in percent (default 99.5)")
    ap.add_argument("--classes", help="imagenet-classes.tsv, to print class names")
    ap.add_argument("--max-list", type=int, default=100,
                    help="list at most this many disagreeing images (default 100)")
    args = ap.parse_args(argv)

    try:
        ref = load_jsonl(args.reference)
        eng = load_jsonl(args.engine)
        names = read_class_names(args.classes) if args.classes else {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def cname(c):
        return f"{c} ({names[c]})" if c in names else str(c)

    common = [k for k in ref if k in eng]  # keeps the reference's order
    only_ref = len(ref) - len(common)
    only_eng = len(eng) - len(common)
    print(f"reference: {args.reference} ({len(ref)} images)")
    print(f"engine:    {args.engine} ({len(eng)} images)")
    print(f"matched images: {len(common)}"
          + (f"  (only in reference: {only_ref}, only in engine: {only_eng})"
             if only_ref or only_eng else ""))
    if not common:
        print("error: no image names in common", file=sys.stderr)
        return 1

    agree = 0
    top5_same_set = 0
    disagreements = []
    label_conflicts = 0
    prob_diffs = []  # |p_ref - p_eng| of the reference's top-1 class, where both have it
    stats = {"reference": [0, 0, 0], "engine": [0, 0, 0]}  # labeled, top1 hits, topk hits
    k_eng = set()
    for key in common:
        r, e = ref[key], eng[key]
        if r.classes[0] == e.classes[0]:
            agree += 1
        else:
            disagreements.append((key, r, e))
        if set(r.classes[:5]) == set(e.classes[:5]):
            top5_same_set += 1
        c0 = r.classes[0]
        if c0 in e.classes and r.probs[0] is not None:
            pe = e.probs[e.classes.index(c0)]
            if pe is not None:
                prob_diffs.append(abs(r.probs[0] - pe))
        if r.label is not None and e.label is not None and r.label != e.label:
            label_conflicts += 1
        k_eng.add(min(len(e.classes), 5))
        for side, rec, other in (("reference", r, e), ("engine", e, r)):
            label = rec.label if rec.label is not None else other.label
            if label is None:
                continue
            st = stats[side]
            st[0] += 1
            st[1] += int(rec.classes[0] == label)
            st[2] += int(label in rec.classes[:5])

    n = len(common)
    agreement = 100.0 * agree / n
    print(f"top-1 agreement: {agree}/{n} = {agreement:.2f}%")
    print(f"same top-5 set:  {top5_same_set}/{n} = {100.0 * top5_same_set / n:.2f}%")
    if prob_diffs:
        prob_diffs.sort()
        mean = sum(prob_diffs) / len(prob_diffs)
        print(f"|prob difference| of the reference's top-1 class over {len(prob_diffs)} images: "
              f"mean {mean:.2e}, median {prob_diffs[len(prob_diffs) // 2]:.2e}, max {prob_diffs[-1]:.2e}")
    if label_conflicts:
        print(f"warning: {label_conflicts} images have different labels on the two sides")

    for side in ("reference", "engine"):
        labeled, h1, h5 = stats[side]
        if labeled:
            k_note = "" if side == "reference" or k_eng == {5} else \
                f" (engine lists top-{'/'.join(str(k) for k in sorted(k_eng))})"
            print(f"{side:9s} accuracy over {labeled} labeled images: "
                  f"top-1 {100.0 * h1 / labeled:.2f}%  top-5 {100.0 * h5 / labeled:.2f}%{k_note}")
        else:
            print(f"{side:9s} accuracy: n/a (no labels)")

    if disagreements:
        print(f"top-1 disagreements ({len(disagreements)}):")
        print("  image | reference top-1 (prob) | engine top-1 (prob) | label")
        for key, r, e in disagreements[:max(args.max_list, 0)]:
            label = r.label if r.label is not None else e.label
            print(f"  {key} | {cname(r.classes[0])} ({fmt_prob(r.probs[0])}) | "
                  f"{cname(e.classes[0])} ({fmt_prob(e.probs[0])}) | "
                  f"{'n/a' if label is None else cname(label)}")
        if len(disagreements) > args.max_list:
            print(f"  ... {len(disagreements) - args.max_list} more")

    ok = agreement >= args.min_agreement
    print(f"{'PASS' if ok else 'FAIL'}: top-1 agreement {agreement:.2f}% "
          f"{'>=' if ok else '<'} {args.min_agreement:.2f}%")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
