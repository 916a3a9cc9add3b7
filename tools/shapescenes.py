#!/usr/bin/env python3
"""ShapeScenes: procedurally generated scenes with exact ground truth, built to
exercise what visual-token methods target (see docs/shapescenes.md).

A scene is a 224x224 image: a textured, cluttered background with a few
small high-contrast specks (the kind of background token that draws outlier
attention) and 1-5 objects, each a shape x colour x size in its own cell of
a 3x3 grid (with jitter), so every object has a nameable coarse position.

Everything is a pure function of (split, index): scene i of a split is the
same on every machine. Splits: "train" (seeds from 10^6 up) and "heldout"
(seeds 0..), never used in training.

  /usr/bin/python3 tools/shapescenes.py --split heldout --count 1000 --out DIR
writes DIR/images/NNNNN.png, DIR/scenes.jsonl (objects, caption) and
DIR/questions.jsonl (yes/no with random/popular/adversarial negatives, counts),
and DIR/requests.jsonl + DIR/vocabulary.json, the same tasks in the form
`tessera report` reads for captioning / QA datasets.
Needs numpy and Pillow only.
"""
import argparse
import json
import math
import os
import re

import numpy as np
from PIL import Image

SIZE = 224
SHAPES = ["circle", "square", "triangle", "star", "cross", "ring", "heart", "diamond", "hexagon"]
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 20),
    "purple": (140, 40, 180), "orange": (250, 140, 0), "white": (250, 250, 250), "black": (15, 15, 15),
}
COLOUR_NAMES = list(COLOURS)
SIZES = {"small": (13, 17), "large": (27, 33)}  # radius range in pixels
POSITIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# "Popular" negatives (POPE): the combinations the training distribution
# favours. Sampling weights make these colours/shapes the most frequent.
SHAPE_WEIGHTS = np.array([3, 3, 2, 1, 1, 1, 1, 1, 1], dtype=np.float64)
COLOUR_WEIGHTS = np.array([3, 2, 3, 1, 1, 1, 1, 1], dtype=np.float64)
TRAIN_SEED_BASE = 1_000_000


def scene_seed(split, index):
    if split == "heldout":
        return index
    if split == "train":
        return TRAIN_SEED_BASE + index
    raise ValueError(f"unknown split {split!r}")


class Rand:
    """Every draw comes from PCG64's doubles (stable across numpy versions)
    through plain arithmetic, so a scene is bit-identical on every machine."""

    def __init__(self, seed):
        self.g = np.random.Generator(np.random.PCG64(seed))

    def uniform(self, a=0.0, b=1.0, size=None):
        return a + (b - a) * self.g.random(size)

    def integer(self, lo, hi):  # [lo, hi)
        return lo + min(hi - lo - 1, int(self.g.random() * (hi - lo)))

    def weighted(self, weights):
        r = self.g.random() * float(np.sum(weights))
        return min(len(weights) - 1, int(np.searchsorted(np.cumsum(weights), r, side="right")))

    def sample(self, n, k):  # k distinct of range(n)
        return [int(i) for i in np.argsort(self.g.random(n), kind="stable")[:k]]

    def noise(self, size):  # zero mean, unit variance, no transcendental functions
        return (self.g.random(size) + self.g.random(size) + self.g.random(size) - 1.5) * 2.0


def _unit(points):
    return np.array([[round(x, 4), round(y, 4)] for x, y in points])


# Unit outlines (radius 1, y down), rounded so every platform builds the same table.
OUTLINES = {
    "triangle": _unit([(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]),
    "square": _unit([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]),
    "diamond": _unit([(0, -1), (0.75, 0), (0, 1), (-0.75, 0)]),
    "hexagon": _unit([(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]),
    "star": _unit([((1 if k % 2 == 0 else 0.45) * math.cos(-math.pi / 2 + k * math.pi / 5),
                    (1 if k % 2 == 0 else 0.45) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]),
    "cross": _unit([(-0.35, -1), (0.35, -1), (0.35, -0.35), (1, -0.35), (1, 0.35), (0.35, 0.35), (0.35, 1),
                    (-0.35, 1), (-0.35, 0.35), (-1, 0.35), (-1, -0.35), (-0.35, -0.35)]),
    "heart": _unit([(16 * math.sin(a) ** 3 / 17,
                     -(13 * math.cos(a) - 5 * math.cos(2 * a) - 2 * math.cos(3 * a) - math.cos(4 * a)) / 17)
                    for a in np.linspace(0, 2 * math.pi, 40, endpoint=False)]),
}


def _inside_polygon(px, py, poly):
    """Even-odd rule at pixel centres (px, py) for polygon vertices poly [k, 2]."""
    inside = np.zeros(px.shape, dtype=bool)
    k = len(poly)
    for i in range(k):
        x0, y0 = poly[i]
        x1, y1 = poly[(i + 1) % k]
        crosses = (y0 > py) != (y1 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < xc)
    return inside


def shape_mask(kind, cx, cy, r, px, py):
    if kind in ("circle", "ring"):
        d2 = (px - cx) ** 2 + (py - cy) ** 2
        return d2 < r * r if kind == "circle" else (d2 < r * r) & (d2 >= (0.5 * r) ** 2)
    return _inside_polygon(px, py, OUTLINES[kind] * r + np.array([cx, cy]))


def paint(canvas, kind, cx, cy, r, colour):
    """Fills a shape of radius r (pixel centres inside), in place."""
    x0, x1 = max(0, int(cx - r) - 2), min(SIZE, int(cx + r) + 3)
    y0, y1 = max(0, int(cy - r) - 2), min(SIZE, int(cy + r) + 3)
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    canvas[y0:y1, x0:x1][shape_mask(kind, cx, cy, r, px, py)] = colour


def background(rnd):
    """Muted smooth texture + grain + clutter strokes + a few bright specks."""
    base = rnd.uniform(70, 170, size=3)
    low = 128 + 40 * rnd.noise((9, 9, 3))
    t = np.arange(SIZE) * (8 / (SIZE - 1))  # bilinear upsampling of the 9x9 grid
    i0 = np.minimum(t.astype(int), 7)
    f = (t - i0)[:, None]
    rows = low[i0] * (1 - f)[..., None] + low[i0 + 1] * f[..., None]            # [224, 9, 3]
    img = rows[:, i0] * (1 - f.T)[..., None] + rows[:, i0 + 1] * f.T[..., None]  # [224, 224, 3]
    img = 0.55 * base + 0.45 * img + 7 * rnd.noise((SIZE, SIZE, 3))
    img = 0.75 * img + 0.25 * img.mean(axis=2, keepdims=True)  # desaturate
    for _ in range(rnd.integer(3, 8)):  # clutter strokes
        x0, y0 = rnd.uniform(0, SIZE, 2)
        dx, dy = 40 * rnd.noise(2)
        tone = np.clip(base + 25 * rnd.noise(3), 0, 255)
        for t in np.linspace(0, 1, 80):
            x, y = int(x0 + t * dx), int(y0 + t * dy)
            if 0 <= x < SIZE and 0 <= y < SIZE:
                img[y, x] = tone
    specks = []
    for _ in range(rnd.integer(2, 6)):  # high-contrast distractor specks
        x, y = rnd.uniform(4, SIZE - 4, 2)
        s = rnd.uniform(1.5, 3.0)
        paint(img, "circle", x, y, s, 255.0 if rnd.uniform() < 0.5 else 0.0)
        specks.append([round(float(x), 1), round(float(y), 1)])
    return img, specks


def make_scene(split, index):
    rnd = Rand(scene_seed(split, index))
    img, specks = background(rnd)
    n = rnd.integer(1, 6)
    cells = sorted(rnd.sample(9, n))
    cell = SIZE / 3
    objects = []
    covered = np.zeros((SIZE, SIZE), dtype=bool)  # object pixels, outlines included
    py, px = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    for c in cells:
        size = "small" if rnd.uniform() < 0.5 else "large"
        r = float(rnd.uniform(*SIZES[size]))
        jitter = max(0.0, cell / 2 - r - 2)
        cx = (c % 3 + 0.5) * cell + rnd.uniform(-jitter, jitter)
        cy = (c // 3 + 0.5) * cell + rnd.uniform(-jitter, jitter)
        obj = {"shape": SHAPES[rnd.weighted(SHAPE_WEIGHTS)], "colour": COLOUR_NAMES[rnd.weighted(COLOUR_WEIGHTS)],
               "size": size, "position": POSITIONS[c], "cx": round(cx, 1), "cy": round(cy, 1), "radius": round(r, 1)}
        edge = (90.0, 90.0, 90.0) if obj["colour"] == "black" else (0.0, 0.0, 0.0)
        paint(img, obj["shape"], cx, cy, r + 1.0, edge)  # a one-pixel outline
        paint(img, obj["shape"], cx, cy, r, COLOURS[obj["colour"]])
        covered |= shape_mask(obj["shape"], cx, cy, r + 1.0, px, py)
        objects.append(obj)
    pil = Image.fromarray(np.clip(np.floor(img + 0.5), 0, 255).astype(np.uint8))
    # Object pixels in each 16x16 patch (row-major 14x14), for attention coverage measurements.
    patch_pixels = covered.reshape(SIZE // 16, 16, SIZE // 16, 16).sum(axis=(1, 3)).reshape(-1)
    return pil, {"split": split, "index": index, "objects": objects, "specks": specks, "caption": caption(objects),
                 "patch_object_pixels": [int(v) for v in patch_pixels]}


def describe(obj):
    return f"a {obj['size']} {obj['colour']} {obj['shape']} at the {obj['position']}"


def caption(objects):
    n = len(objects)
    head = "There is one object: " if n == 1 else f"There are {NUMBERS[n]} objects: "
    parts = [describe(o) for o in objects]
    body = parts[0] if n == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return head + body + "."


def _pick(rng, n):
    return rng.integer(0, n) if isinstance(rng, Rand) else int(rng.integers(n))


def questions(scene, rng):
    # rng: a Rand (held-out questions, identical everywhere) or a numpy Generator (training)
    """POPE-style existence questions (a positive and one negative of each
    kind) and counting questions, with exact answers."""
    objs = scene["objects"]
    present = {(o["colour"], o["shape"]) for o in objs}
    qs = []
    o = objs[_pick(rng, len(objs))]
    qs.append({"type": "exist", "negative": None, "colour": o["colour"], "shape": o["shape"], "answer": "yes"})

    def absent(pairs):
        pairs = [p for p in pairs if p not in present]
        return pairs[_pick(rng, len(pairs))] if pairs else None

    all_pairs = [(c, s) for c in COLOUR_NAMES for s in SHAPES]
    popular = [(c, s) for c in ("red", "blue", "green") for s in ("circle", "square")]
    adversarial = [(o2["colour"], s) for o2 in objs for s in SHAPES] + [(c, o2["shape"]) for o2 in objs for c in
                                                                          COLOUR_NAMES]
    for kind, pool in (("random", all_pairs), ("popular", popular), ("adversarial", adversarial)):
        pair = absent(pool) or absent(all_pairs)
        qs.append({"type": "exist", "negative": kind, "colour": pair[0], "shape": pair[1], "answer": "no"})
    qs.append({"type": "count", "what": "objects", "answer": NUMBERS[len(objs)]})
    shape = objs[_pick(rng, len(objs))]["shape"]
    qs.append({"type": "count", "what": shape, "answer": NUMBERS[sum(o2["shape"] == shape for o2 in objs)]})
    for q in qs:
        q["prompt"] = question_text(q)
    return qs


def question_text(q):
    if q["type"] == "exist":
        return f"Is there a {q['colour']} {q['shape']} in the image? Answer yes or no."
    if q["what"] == "objects":
        return "How many objects are there? Answer with a number."
    return f"How many {q['what']}s are there? Answer with a number."


CAPTION_PROMPT = "Describe the image."

_MENTION = re.compile(r"\b(small|large) (" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r") at the (" +
                      "|".join(sorted(POSITIONS, key=len, reverse=True)) + r")\b")


def parse_caption(text):
    """Objects a caption mentions, as (size, colour, shape, position) tuples."""
    return [m.groups() for m in _MENTION.finditer(text)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="heldout", choices=["heldout", "train"])
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    with open(os.path.join(args.out, "scenes.jsonl"), "w") as fs, \
            open(os.path.join(args.out, "questions.jsonl"), "w") as fq, \
            open(os.path.join(args.out, "requests.jsonl"), "w") as fr:
        for i in range(args.start, args.start + args.count):
            img, scene = make_scene(args.split, i)
            name = f"{args.split}-{i:06d}.png"
            img.save(os.path.join(args.out, "images", name))
            scene["image"] = name
            fs.write(json.dumps(scene) + "\n")
            # `tessera report` requests (task, answer, objects), an image's requests together.
            objects = sorted({f"{o['colour']} {o['shape']}" for o in scene["objects"]})
            fr.write(json.dumps({"id": f"{name}#caption", "image": "images/" + name, "prompt": CAPTION_PROMPT,
                                 "task": "caption", "objects": objects}) + "\n")
            rng = Rand(scene_seed(args.split, i) + 7919)
            for k, q in enumerate(questions(scene, rng)):
                q.update({"image": name, "id": f"{name}#{k}"})
                fq.write(json.dumps(q) + "\n")
                task = "yesno" if q["type"] == "exist" else "count"
                req = {"id": q["id"], "image": "images/" + name, "prompt": q["prompt"], "task": task,
                       "answer": q["answer"]}
                if task == "yesno":
                    req["negative"] = q["negative"]
                fr.write(json.dumps(req) + "\n")
    with open(os.path.join(args.out, "vocabulary.json"), "w") as f:
        json.dump({"objects": [f"{c} {s}" for s in SHAPES for c in COLOUR_NAMES]}, f, indent=1)


if __name__ == "__main__":
    main()
