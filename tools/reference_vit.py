#!/usr/bin/env python3
"""Independent float64 reference implementation of a timm VisionTransformer.

This is the yardstick the C++ engine (Tessera) is checked against, so it
deliberately shares no code, no file parser and no numerics with it.  It only
needs Debian's ``/usr/bin/python3`` with numpy and Pillow (no torch, no timm,
no scipy).

What it reproduces, step by step (names follow timm / the ViT paper,
Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words"):

1. ``model.safetensors`` is parsed by hand: an 8-byte little-endian header
   length, a JSON header ``{name: {dtype, shape, data_offsets}}``, then the raw
   tensor bytes.  F32, F16, BF16 and F64 tensors are read and widened to
   float64.
2. timm's ``config.json`` gives the architecture (``model_args``, top-level
   ``global_pool``) and the evaluation preprocessing (``pretrained_cfg``).
3. Preprocessing is timm's ``transforms_imagenet_eval`` as executed by
   torchvision on a PIL image:
   ``Resize(floor(img_size / crop_pct), interpolation)`` (shorter side, aspect
   kept) -> ``CenterCrop(img_size)`` -> ``ToTensor()`` (/255) ->
   ``Normalize(mean, std)``.
4. The forward pass of ``timm.models.vision_transformer.VisionTransformer`` in
   float64: patch_embed -> _pos_embed (cls_token + pos_embed) -> blocks
   (pre-LN attention and MLP with residuals) -> norm -> pool ('token') ->
   head.  GELU is the exact erf form, with an erf accurate to ~1e-15.

Usage::

    /usr/bin/python3 tools/reference_vit.py --model DIR --dataset DIR \\
        [--limit N] [--offset K] [--out FILE.jsonl] [--dump-logits FILE.npy]
    /usr/bin/python3 tools/reference_vit.py --model DIR --images a.jpg b.png

Output: one JSON line per image,
``{"image": name, "top5": [class ids], "probs": [top-5 probabilities],
"label": int or null}``, written to ``--out`` (or to stdout when ``--out`` is
not given), then a summary line ``summary: images=N top1=xx.xx% top5=yy.yy%``
(on stdout, or on stderr when stdout carries the JSON lines).  Progress goes to
stderr.

Speed: numpy's float64 matmuls are only as fast as the BLAS it loads.  Debian
points ``libblas.so.3`` at the netlib reference BLAS (~2 GFLOP/s) unless told
otherwise; when Debian's OpenBLAS (package libopenblas0-pthread) is present,
this script re-executes itself once with that BLAS first on LD_LIBRARY_PATH
(~15x faster).  Set ``TESSERA_REF_BLAS=system`` to keep whatever BLAS numpy
would load by default.  Results agree to float64 rounding either way.
"""

import os
import sys

# --------------------------------------------------------------------------
# BLAS selection: has to happen before numpy is imported (the dynamic loader
# resolves libblas.so.3 once, at numpy import time).
# --------------------------------------------------------------------------
_OPENBLAS_DIRS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread",
)


def _maybe_reexec_with_openblas():
    """Re-run this script with Debian's OpenBLAS ahead of the reference BLAS."""
    if os.environ.get("TESSERA_REF_BLAS", "") == "system":
        return
    if os.environ.get("_TESSERA_REF_REEXEC") == "1":
        return  # already re-executed once; never loop
    for d in _OPENBLAS_DIRS:
        if os.path.exists(os.path.join(d, "libblas.so.3")):
            paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
            if d in paths:
                return
            env = dict(os.environ)
            env["LD_LIBRARY_PATH"] = ":".join([d] + paths)
            env["_TESSERA_REF_REEXEC"] = "1"
            try:
                os.execve(sys.executable, [sys.executable] + sys.argv, env)
            except OSError:
                return  # could not re-exec: carry on with the default BLAS


if __name__ == "__main__":
    _maybe_reexec_with_openblas()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


# ==========================================================================
# safetensors
# ==========================================================================

# safetensors dtype tag -> (numpy dtype of the stored bytes, bytes per element)
_ST_DTYPES = {
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # widened by hand below
}


def load_safetensors(path):
    """Read every tensor of a .safetensors file as a float64 numpy array.

    File layout (https://github.com/huggingface/safetensors):
      bytes [0, 8)        u64 little-endian N = length of the JSON header
      bytes [8, 8+N)      JSON: {"name": {"dtype", "shape", "data_offsets":
                          [begin, end]}, optional "__metadata__": {...}}
      bytes [8+N, ...)    the data buffer; offsets are relative to its start
    The file is memory-mapped; each tensor is copied out as float64.
    Returns (dict name -> ndarray, metadata dict).
    """
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: too short for a safetensors file")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > file_size - 8:
            raise ValueError(f"{path}: header length {header_len} exceeds file size")
        header = json.loads(f.read(header_len).decode("utf-8"))
    data_start = 8 + header_len
    data_len = file_size - data_start
    buf = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(data_len,))

    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        dtype_tag = info["dtype"]
        if dtype_tag not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dtype_tag}")
        np_dtype, itemsize = _ST_DTYPES[dtype_tag]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (0 <= begin <= end <= data_len) or end - begin != count * itemsize:
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {begin}..{end} "
                             f"for shape {shape} dtype {dtype_tag}")
        raw = np.frombuffer(buf[begin:end], dtype=np_dtype, count=count)
        if dtype_tag == "BF16":
            # bfloat16 is the upper 16 bits of an IEEE float32.
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = raw.astype(np.float64).reshape(shape)
    return tensors, metadata


# ==========================================================================
# timm config.json
# ==========================================================================

class VitConfig:
    """The subset of a timm ``config.json`` that defines model and eval transform."""

    def __init__(self, cfg):
        ma = cfg.get("model_args", {})
        pc = cfg.get("pretrained_cfg", {})
        # --- architecture (timm VisionTransformer.__init__ arguments) ---
        self.img_size = int(ma.get("img_size", 224))
        self.patch_size = int(ma.get("patch_size", 16))
        self.embed_dim = int(ma.get("embed_dim", 768))
        self.depth = int(ma.get("depth", 12))
        self.num_heads = int(ma.get("num_heads", 12))
        self.mlp_ratio = float(ma.get("mlp_ratio", 4.0))
        self.qkv_bias = bool(ma.get("qkv_bias", True))
        self.class_token = bool(ma.get("class_token", True))
        self.pre_norm = bool(ma.get("pre_norm", False))
        self.norm_eps = float(ma.get("norm_eps", 1e-6))
        self.act_layer = str(ma.get("act_layer", "gelu"))
        self.global_pool = str(cfg.get("global_pool", ma.get("global_pool", "token")))
        self.num_classes = int(cfg.get("num_classes", pc.get("num_classes", 1000)))
        # --- evaluation preprocessing (timm pretrained_cfg) ---
        self.input_size = tuple(int(v) for v in pc.get("input_size", [3, self.img_size, self.img_size]))
        self.interpolation = str(pc.get("interpolation", "bicubic"))
        self.crop_pct = float(pc.get("crop_pct", 0.875))
        self.crop_mode = str(pc.get("crop_mode", "center"))
        self.mean = tuple(float(v) for v in pc.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(float(v) for v in pc.get("std", (0.229, 0.224, 0.225)))

        if self.embed_dim % self.num_heads:
            raise ValueError("embed_dim must be divisible by num_heads")
        if self.act_layer not in ("gelu", "gelu_tanh"):
            raise NotImplementedError(f"act_layer {self.act_layer!r}")
        if self.global_pool != "token" or not self.class_token:
            raise NotImplementedError("only global_pool='token' with a class token is implemented")
        if self.pre_norm:
            raise NotImplementedError("pre_norm=True (norm_pre) is not implemented")
        if self.input_size[0] != 3:
            raise NotImplementedError("only 3-channel input is implemented")

    @classmethod
    def from_dir(cls, model_dir):
        with open(os.path.join(model_dir, "config.json"), "r", encoding="utf-8") as f:
            return cls(json.load(f))

    def describe(self):
        return (f"img_size={self.img_size} patch={self.patch_size} dim={self.embed_dim} "
                f"depth={self.depth} heads={self.num_heads} mlp_ratio={self.mlp_ratio} "
                f"eps={self.norm_eps} act={self.act_layer} pool={self.global_pool} | "
                f"input={self.input_size} {self.interpolation} crop_pct={self.crop_pct} "
                f"crop_mode={self.crop_mode} mean={self.mean} std={self.std}")


# ==========================================================================
# Preprocessing: timm transforms_imagenet_eval, torchvision semantics, Pillow
# ==========================================================================

# timm str_to_interp_mode -> torchvision InterpolationMode -> PIL filter
_PIL_FILTERS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "box": Image.BOX,
    "hamming": Image.HAMMING,
    "lanczos": Image.LANCZOS,
}


def torchvision_resize_shorter(img, size, resample):
    """torchvision ``Resize(int)`` on a PIL image.

    The shorter side becomes ``size``; the longer one becomes
    ``int(size * long / short)`` (truncated, as in torchvision's
    ``_compute_resized_output_size``).  Then ``img.resize((w, h), resample)``.
    """
    w, h = img.size
    short, long_ = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long_ / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return img.resize((new_w, new_h), resample)


def torchvision_center_crop(arr, crop_h, crop_w):
    """torchvision ``CenterCrop`` on an HWC array (zero padding if too small).

    ``top = int(round((h - crop_h) / 2.0))`` with Python's round (half to even),
    same for ``left``.
    """
    h, w = arr.shape[:2]
    if crop_h > h or crop_w > w:
        # torchvision pads symmetrically (extra pixel on the bottom/right) with 0
        pad_t = (crop_h - h) // 2 if crop_h > h else 0
        pad_b = (crop_h - h + 1) // 2 if crop_h > h else 0
        pad_l = (crop_w - w) // 2 if crop_w > w else 0
        pad_r = (crop_w - w + 1) // 2 if crop_w > w else 0
        arr = np.pad(arr, ((pad_t, pad_b), (pad_l, pad_r), (0, 0)), mode="constant")
        h, w = arr.shape[:2]
        if h == crop_h and w == crop_w:
            return arr
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    return arr[top:top + crop_h, left:left + crop_w]


def preprocess(path, cfg):
    """Load one image and return the normalized CHW float64 network input."""
    _, crop_h, crop_w = cfg.input_size
    resample = _PIL_FILTERS[cfg.interpolation]
    with Image.open(path) as im:
        img = im.convert("RGB")  # grayscale / CMYK / palette / RGBA -> RGB
    if cfg.crop_mode == "center":
        # timm: scale_size = floor(img_size / crop_pct); square target -> Resize(int)
        scale_h = math.floor(crop_h / cfg.crop_pct)
        scale_w = math.floor(crop_w / cfg.crop_pct)
        if scale_h != scale_w:
            raise NotImplementedError("non-square input_size with crop_mode=center")
        img = torchvision_resize_shorter(img, scale_h, resample)
    elif cfg.crop_mode == "squash":
        # timm: Resize((scale_h, scale_w)) ignoring aspect ratio, then CenterCrop
        scale_h = math.floor(crop_h / cfg.crop_pct)
        scale_w = math.floor(crop_w / cfg.crop_pct)
        img = img.resize((scale_w, scale_h), resample)
    else:
        raise NotImplementedError(f"crop_mode {cfg.crop_mode!r}")
    arr = np.asarray(img, dtype=np.uint8)  # H, W, 3
    arr = torchvision_center_crop(arr, crop_h, crop_w)
    x = arr.astype(np.float64) / 255.0  # ToTensor
    x = (x - np.asarray(cfg.mean)) / np.asarray(cfg.std)  # Normalize
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # HWC -> CHW


# ==========================================================================
# Math helpers in float64
# ==========================================================================

_ERF_SPLIT = 2.5  # |x| below: power series; at or above: erfc continued fraction
_ERF_SERIES_TERMS = 36
_ERFC_CF_TERMS = 28
_ERF_CHUNK = 1 << 15  # elements per chunk: keeps the Horner loop in cache
# Series coefficients 1 / (2n+1)!!  for n = 0.._ERF_SERIES_TERMS
_ERF_COEF = [1.0]
for _n in range(1, _ERF_SERIES_TERMS + 1):
    _ERF_COEF.append(_ERF_COEF[-1] / (2 * _n + 1))
del _n
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


def _erf_chunk(x):
    ax = np.abs(x)
    out = np.empty_like(x)
    small = ax < _ERF_SPLIT
    # |x| < 2.5:  erf(x) = 2/sqrt(pi) * x * exp(-x^2) * sum_n (2x^2)^n / (2n+1)!!
    # (Abramowitz & Stegun 7.1.6). Every term is positive: no cancellation.
    xs = x[small]
    y = xs * xs
    e = np.exp(-y)
    y *= 2.0
    s = np.full_like(xs, _ERF_COEF[-1])
    for c in reversed(_ERF_COEF[:-1]):  # Horner in y = 2x^2
        s *= y
        s += c
    s *= e
    s *= xs
    s *= _TWO_OVER_SQRT_PI
    out[small] = s
    large = ~small
    if large.any():
        # |x| >= 2.5:  erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + ...))))
        # (Laplace continued fraction, A&S 7.1.14), evaluated bottom-up.
        z = ax[large]
        f = z.copy()
        for k in range(_ERFC_CF_TERMS, 0, -1):
            f = z + (0.5 * k) / f
        erfc = np.exp(-z * z) * _INV_SQRT_PI / f
        out[large] = np.copysign(1.0 - erfc, x[large])
    return out


def erf(x):
    """Vectorized float64 error function, |error| < ~1e-15 against libm's erf.

    numpy has no erf and scipy is not assumed, so it is computed here; the
    result is checked against ``math.erf`` by ``check_erf`` at start-up.
    """
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    for i in range(0, flat.size, _ERF_CHUNK):
        out[i:i + _ERF_CHUNK] = _erf_chunk(flat[i:i + _ERF_CHUNK])
    return out.reshape(x.shape)


def check_erf(tolerance=1e-14):
    """Compare ``erf`` with ``math.erf`` on a dense grid; raise if it drifts."""
    grid = np.concatenate([np.linspace(-8.0, 8.0, 40001),
                           np.linspace(-1e-3, 1e-3, 2001),
                           [0.0, -0.0, 2.5, -2.5, np.nextafter(2.5, 0), 30.0, -30.0]])
    ref = np.array([math.erf(v) for v in grid])
    err = float(np.max(np.abs(erf(grid) - ref)))
    if not err < tolerance:
        raise RuntimeError(f"erf self-check failed: max |erf - math.erf| = {err:g}")
    return err


def gelu(x):
    """Exact GELU: x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))  (torch.nn.GELU())."""
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


def gelu_tanh(x):
    """Tanh-approximated GELU (torch.nn.GELU(approximate='tanh'))."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, weight, bias, eps):
    """torch.nn.LayerNorm over the last axis: biased variance, eps inside the sqrt."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return xc / np.sqrt(var + eps) * weight + bias


def linear(x, weight, bias=None):
    """torch.nn.Linear: y = x W^T + b, W stored as (out_features, in_features)."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def softmax(x, axis=-1):
    """Numerically stable softmax (subtract the max before exp)."""
    z = x - np.max(x, axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= np.sum(z, axis=axis, keepdims=True)
    return z


# ==========================================================================
# timm VisionTransformer forward pass
# ==========================================================================

class VisionTransformer:
    """float64 re-implementation of timm's ``VisionTransformer`` (inference only)."""

    def __init__(self, model_dir):
        self.cfg = VitConfig.from_dir(model_dir)
        self.w, self.metadata = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        self._check_shapes()
        c = self.cfg
        self.head_dim = c.embed_dim // c.num_heads
        self.scale = self.head_dim ** -0.5  # Attention.scale
        self.act = gelu if c.act_layer == "gelu" else gelu_tanh
        # Conv2d(3, D, kernel=P, stride=P) == a Linear over flattened
        # (channel, ky, kx) patches: weight (D, 3, P, P) -> (D, 3*P*P).
        self.patch_w = self.w["patch_embed.proj.weight"].reshape(c.embed_dim, -1)

    def _check_shapes(self):
        c, w = self.cfg, self.w
        d, p = c.embed_dim, c.patch_size
        hidden = int(d * c.mlp_ratio)
        n_tok = (c.input_size[1] // p) * (c.input_size[2] // p) + 1
        want = {
            "cls_token": (1, 1, d),
            "pos_embed": (1, n_tok, d),
            "patch_embed.proj.weight": (d, 3, p, p),
            "patch_embed.proj.bias": (d,),
            "norm.weight": (d,), "norm.bias": (d,),
            "head.weight": (c.num_classes, d), "head.bias": (c.num_classes,),
        }
        for i in range(c.depth):
            b = f"blocks.{i}."
            want.update({
                b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                b + "attn.qkv.weight": (3 * d, d),
                b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                b + "mlp.fc1.weight": (hidden, d), b + "mlp.fc1.bias": (hidden,),
                b + "mlp.fc2.weight": (d, hidden), b + "mlp.fc2.bias": (d,),
            })
            if c.qkv_bias:
                want[b + "attn.qkv.bias"] = (3 * d,)
        for name, shape in want.items():
            if name not in w:
                raise KeyError(f"missing tensor {name}")
            if tuple(w[name].shape) != shape:
                raise ValueError(f"tensor {name}: shape {w[name].shape}, expected {shape}")
        unused = sorted(set(w) - set(want))
        if unused:
            raise ValueError(f"unexpected tensors (unsupported layout?): {unused[:5]}")

    def patch_embed(self, x):
        """PatchEmbed: (B, 3, H, W) -> (B, N, D), patches in raster (row-major) order."""
        b, ch, h, w_ = x.shape
        p = self.cfg.patch_size
        gh, gw = h // p, w_ // p
        patches = (x.reshape(b, ch, gh, p, gw, p)
                   .transpose(0, 2, 4, 1, 3, 5)          # B, gh, gw, C, ky, kx
                   .reshape(b, gh * gw, ch * p * p))
        return linear(patches, self.patch_w, self.w["patch_embed.proj.bias"])

    def attention(self, x, i):
        """timm Attention: qkv Linear, split heads, softmax(q k^T * scale) v, proj."""
        b, t, d = x.shape
        nh, hd = self.cfg.num_heads, self.head_dim
        pre = f"blocks.{i}.attn."
        qkv = linear(x, self.w[pre + "qkv.weight"], self.w.get(pre + "qkv.bias"))
        qkv = qkv.reshape(b, t, 3, nh, hd).transpose(2, 0, 3, 1, 4)  # 3, B, heads, T, hd
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = softmax(q @ k.transpose(0, 1, 3, 2), axis=-1)  # B, heads, T, T
        out = attn @ v                                         # B, heads, T, hd
        out = out.transpose(0, 2, 1, 3).reshape(b, t, d)       # concat heads
        return linear(out, self.w[pre + "proj.weight"], self.w[pre + "proj.bias"])

    def mlp(self, x, i):
        """timm Mlp: fc1 -> GELU -> fc2 (dropouts are identity at eval)."""
        pre = f"blocks.{i}.mlp."
        h = linear(x, self.w[pre + "fc1.weight"], self.w[pre + "fc1.bias"])
        h = self.act(h)
        return linear(h, self.w[pre + "fc2.weight"], self.w[pre + "fc2.bias"])

    def forward_features(self, x):
        c, w = self.cfg, self.w
        x = self.patch_embed(x)
        # _pos_embed: prepend cls_token, then add pos_embed (which covers the cls slot)
        cls = np.broadcast_to(w["cls_token"], (x.shape[0], 1, c.embed_dim))
        x = np.concatenate([cls, x], axis=1) + w["pos_embed"]
        # norm_pre is Identity (pre_norm=False)
        for i in range(c.depth):
            b = f"blocks.{i}."
            # Block: x = x + attn(norm1(x)); x = x + mlp(norm2(x))  (ls/drop_path identity)
            x = x + self.attention(layer_norm(x, w[b + "norm1.weight"], w[b + "norm1.bias"], c.norm_eps), i)
            x = x + self.mlp(layer_norm(x, w[b + "norm2.weight"], w[b + "norm2.bias"], c.norm_eps), i)
        return layer_norm(x, w["norm.weight"], w["norm.bias"], c.norm_eps)  # final norm

    def forward_head(self, x):
        x = x[:, 0]  # global_pool == 'token': the class token; fc_norm is Identity
        return linear(x, self.w["head.weight"], self.w["head.bias"])

    def __call__(self, x):
        """(B, 3, H, W) float64 normalized images -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(x))


# ==========================================================================
# Data sets and CLI
# ==========================================================================

def read_dataset(dataset_dir):
    """``labels.tsv`` (header ``image<TAB>class_index``) + ``images/``.

    Returns a list of (display name, path, label int or None) in file order.
    """
    items = []
    labels_path = os.path.join(dataset_dir, "labels.tsv")
    with open(labels_path, "r", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        try:
            col_img, col_lbl = header.index("image"), header.index("class_index")
        except ValueError:
            raise ValueError(f"{labels_path}: expected columns 'image' and 'class_index'")
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            cols = line.split("\t")
            name = cols[col_img]
            items.append((name, os.path.join(dataset_dir, "images", name), int(cols[col_lbl])))
    return items


def summarize(n, top1_hits, top5_hits, n_labeled):
    def pct(k):
        return f"{100.0 * k / n_labeled:.2f}%" if n_labeled else "n/a"
    return f"summary: images={n} labeled={n_labeled} top1={pct(top1_hits)} top5={pct(top5_hits)}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="dir with model.safetensors + config.json")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="dir with labels.tsv and images/")
    src.add_argument("--images", nargs="+", metavar="FILE", help="image files (no labels)")
    ap.add_argument("--limit", type=int, default=None, help="process at most N images")
    ap.add_argument("--offset", type=int, default=0, help="skip the first K images")
    ap.add_argument("--out", help="write JSON lines here (default: stdout)")
    ap.add_argument("--dump-logits", metavar="FILE.npy",
                    help="save the (N, num_classes) float64 logits, in output order")
    ap.add_argument("--batch", type=int, default=16, help="images per forward pass")
    args = ap.parse_args(argv)

    t_start = time.time()
    erf_err = check_erf()
    model = VisionTransformer(args.model)
    cfg = model.cfg
    print(f"[reference_vit] model {args.model}: {cfg.describe()}", file=sys.stderr)
    print(f"[reference_vit] {len(model.w)} tensors, erf self-check max err {erf_err:.1e}, "
          f"LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')!r}", file=sys.stderr)

    if args.dataset:
        items = read_dataset(args.dataset)
    else:
        items = [(os.path.basename(p), p, None) for p in args.images]
    items = items[max(args.offset, 0):]
    if args.limit is not None:
        items = items[:max(args.limit, 0)]

    out_f = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    summary_stream = sys.stdout if args.out else sys.stderr
    all_logits = [] if args.dump_logits else None
    n_done = top1 = top5 = n_labeled = 0
    t_loop = time.time()
    try:
        for s in range(0, len(items), max(args.batch, 1)):
            chunk = items[s:s + max(args.batch, 1)]
            x = np.stack([preprocess(path, cfg) for _, path, _ in chunk])
            logits = model(x)
            probs = softmax(logits.copy(), axis=-1)
            if all_logits is not None:
                all_logits.append(logits)
            for (name, _, label), pr in zip(chunk, probs):
                # top-5 by probability; ties broken by lower class id (stable sort)
                order = np.argsort(-pr, kind="stable")[:5]
                rec = {"image": name,
                       "top5": [int(c) for c in order],
                       "probs": [float(pr[c]) for c in order],
                       "label": label}
                out_f.write(json.dumps(rec) + "\n")
                if label is not None:
                    n_labeled += 1
                    top1 += int(order[0] == label)
                    top5 += int(label in order)
            out_f.flush()
            n_done += len(chunk)
            el = time.time() - t_loop
            acc = f" top1 {100.0 * top1 / n_labeled:.2f}%" if n_labeled else ""
            print(f"[reference_vit] {n_done}/{len(items)} images, {el:.1f}s, "
                  f"{n_done / el:.2f} img/s{acc}", file=sys.stderr)
    finally:
        if args.out:
            out_f.close()
    if all_logits is not None:
        arr = np.concatenate(all_logits) if all_logits else np.zeros((0, cfg.num_classes))
        np.save(args.dump_logits, arr)
    print(f"[reference_vit] done in {time.time() - t_start:.1f}s", file=sys.stderr)
    print(summarize(n_done, top1, top5, n_labeled), file=summary_stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
