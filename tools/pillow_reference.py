#!/usr/bin/env python3
"""Reference image operations for Tessera's tests, computed with Pillow and numpy.

Tessera reimplements Pillow's Image.resize and timm's eval-time preprocessing in
C++; the tests write an image as a lossless PNG, run this script on it and
compare the results.

Usage:
  pillow_reference.py decode IN OUT.raw [IN OUT.raw ...]
      Image.open(IN).convert('RGB') (how timm's datasets load images); writes
      "WIDTHxHEIGHT\n" then the raw RGB bytes.
  pillow_reference.py resize IN.png W H METHOD OUT.raw [IN.png W H METHOD OUT.raw ...]
      Image.resize((W, H), METHOD) for METHOD in nearest|bilinear|bicubic;
      writes the raw RGB bytes (row-major, interleaved).
  pillow_reference.py preprocess IN.png SIZE CROP_PCT CROP_MODE INTERP MEAN STD OUT.f32 [...]
      timm's transforms_imagenet_eval. SIZE is HxW or one number for a square;
      CROP_MODE is center|squash|border; MEAN and STD are three comma-separated
      numbers. Writes float32 CHW.

Each subcommand takes any number of argument groups, so one run (one Python
start-up) serves a whole test.

timm and torchvision are not needed: the transform is written out here with the
same Pillow calls and arithmetic they make.
"""
import functools
import math
import sys

import numpy as np
from PIL import Image, ImageOps

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@functools.lru_cache(maxsize=4)
def load_rgb(path):
    """Opens an image the way timm's dataset does: Image.open(...).convert('RGB')."""
    with Image.open(path) as img:
        return img.convert("RGB")


def resize_shorter_side(img, size, resample):
    """torchvision Resize(int): shorter side -> size, longer side truncated."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample)


def resize_keep_ratio(img, target_hw, longest, resample):
    """timm ResizeKeepRatio without random scale or aspect jitter."""
    w, h = img.size
    ratio_h = h / target_hw[0]
    ratio_w = w / target_hw[1]
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    new_h, new_w = round(h / ratio), round(w / ratio)
    return img.resize((new_w, new_h), resample)


def center_crop_or_pad(img, crop_hw, fill):
    """torchvision CenterCrop (fill 0) / timm CenterCropOrPad."""
    crop_h, crop_w = crop_hw
    w, h = img.size
    if crop_w > w or crop_h > h:
        border = (
            (crop_w - w) // 2 if crop_w > w else 0,
            (crop_h - h) // 2 if crop_h > h else 0,
            (crop_w - w + 1) // 2 if crop_w > w else 0,
            (crop_h - h + 1) // 2 if crop_h > h else 0,
        )
        img = ImageOps.expand(img, border=border, fill=fill)
        w, h = img.size
        if (w, h) == (crop_w, crop_h):
            return img
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    return img.crop((left, top, left + crop_w, top + crop_h))


def eval_transform(img, size_hw, crop_pct, crop_mode, interp, mean, std):
    """timm transforms_imagenet_eval followed by ToTensor and Normalize."""
    scale_hw = tuple(math.floor(x / crop_pct) for x in size_hw)
    resample = RESAMPLE[interp]
    if crop_mode == "squash":
        img = img.resize((scale_hw[1], scale_hw[0]), resample)
        img = center_crop_or_pad(img, size_hw, (0, 0, 0))
    elif crop_mode == "border":
        img = resize_keep_ratio(img, scale_hw, 1.0, resample)
        img = center_crop_or_pad(img, size_hw, tuple(round(255 * v) for v in mean))
    else:
        if scale_hw[0] == scale_hw[1]:
            img = resize_shorter_side(img, scale_hw[0], resample)
        else:
            # timm passes no interpolation here, so ResizeKeepRatio's default applies
            img = resize_keep_ratio(img, scale_hw, 0.0, Image.Resampling.BILINEAR)
        img = center_crop_or_pad(img, size_hw, (0, 0, 0))
    chw = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean32 = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std32 = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return (chw - mean32) / std32


def three_floats(text):
    """'0.485,0.456,0.406' -> [0.485, 0.456, 0.406] (Python floats, as timm holds them)."""
    values = [float(v) for v in text.split(",")]
    if len(values) != 3:
        raise SystemExit(f"expected three comma-separated numbers, got {text!r}")
    return values


def decode(path, out):
    """The decoded pixels exactly as timm sees them."""
    img = load_rgb(path)
    with open(out, "wb") as f:
        f.write(f"{img.width}x{img.height}\n".encode())
        f.write(img.tobytes())


def resize(path, width, height, method, out):
    """Image.resize with reducing_gap=None, the whole image as the box."""
    with open(out, "wb") as f:
        f.write(load_rgb(path).resize((int(width), int(height)), RESAMPLE[method]).tobytes())


def preprocess(path, size, crop_pct, crop_mode, interp, mean, std, out):
    """eval_transform on one image, written as float32 CHW."""
    parts = [int(v) for v in size.split("x")]
    size_hw = (parts[0], parts[-1])
    result = eval_transform(load_rgb(path), size_hw, float(crop_pct), crop_mode, interp,
                            three_floats(mean), three_floats(std))
    result.astype(np.float32).tofile(out)


def main(argv):
    commands = {"decode": (decode, 2), "resize": (resize, 5), "preprocess": (preprocess, 8)}
    if len(argv) < 2 or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    command, group = commands[argv[0]]
    args = argv[1:]
    if len(args) % group != 0:
        print(f"{argv[0]} takes groups of {group} arguments", file=sys.stderr)
        return 2
    for i in range(0, len(args), group):
        command(*args[i:i + group])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
