#!/usr/bin/python3
"""Peer-side model tooling for Tessera's benchmark (bench/run.sh).

A compact, timm-equivalent VisionTransformer in plain PyTorch (timm itself is
not installable here) with three jobs:

  export      load a timm-layout model folder (model.safetensors + config.json),
              check the logits on a random input are finite, and export ONNX
              with a static batch size (input name `pixel_values`).
  make-random build a randomly initialised ViT (default ViT-S/16: embed 384,
              depth 12, heads 6) from a fixed seed and write it as a
              timm-layout folder (model.safetensors + config.json) so Tessera
              can load the identical weights; then export it like `export`.
  bench       time the same torch module's forward pass under
              torch.inference_mode() with torch.set_num_threads(T) and print
              one JSON object shaped like `tessera bench --format json`.
  parity      run Tessera (`tessera classify --logits`) and this module on
              the same image and check the outputs agree; optionally save
              that input and Tessera's outputs next to ONNX files so the ORT
              harness checks ORT against Tessera directly.

make-random has presets (--preset): `tiny` (ViT-Tiny/16 shapes), `small`
(ViT-S/16, the default) and
`large` (timm vit_large_patch14_clip_336 shapes: CLIP ViT-L/14 at 336 px,
pre-norm, no patch bias, quick_gelu, LayerNorm eps 1e-5, a 768-wide head).

Only numpy + torch are needed (Debian: python3-numpy, python3-torch). The
safetensors format is parsed and written by hand: an 8-byte little-endian
header length, a JSON header, then the raw little-endian tensor bytes.
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np

# ---------------------------------------------------------------- safetensors

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64,
              "BF16": None, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """Returns {name: np.ndarray(float32)} from a .safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = blob[base + start: base + end]
        dt = info["dtype"]
        if dt == "BF16":
            u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        elif dt in _ST_DTYPES:
            arr = np.frombuffer(raw, dtype=np.dtype(_ST_DTYPES[dt]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dt}")
        out[name] = arr.astype(np.float32, copy=False).reshape(info["shape"])  # may be read-only
    return out


def write_safetensors(path, tensors):
    """Writes {name: np.ndarray} as float32 safetensors (names sorted, header
    padded with spaces to an 8-byte boundary like the reference writer)."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        nbytes = int(np.prod(tensors[name].shape, dtype=np.int64)) * 4
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for name in sorted(tensors):  # one tensor at a time (ViT-L is 1.2 GB)
            f.write(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())
    os.replace(tmp, path)


# ---------------------------------------------------------------- the model

def _torch():
    import torch  # imported lazily so --help works without torch
    return torch


def build_vit_class():
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class Attention(nn.Module):
        def __init__(self, dim, heads, qkv_bias):
            super().__init__()
            self.heads = heads
            self.head_dim = dim // heads
            self.scale = self.head_dim ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            x = (attn @ v).transpose(1, 2).reshape(b, n, c)
            return self.proj(x)

    def quick_gelu(x):
        return x * torch.sigmoid(1.702 * x)  # timm QuickGELU (OpenAI CLIP)

    # act_layer -> function: exact (erf) GELU as timm's nn.GELU, or QuickGELU.
    acts = {"gelu": F.gelu, "quick_gelu": quick_gelu}

    class Mlp(nn.Module):
        def __init__(self, dim, hidden, act):
            super().__init__()
            self.act = acts[act]
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self, dim, heads, mlp_ratio, qkv_bias, eps, act):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=eps)
            self.attn = Attention(dim, heads, qkv_bias)
            self.norm2 = nn.LayerNorm(dim, eps=eps)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act)

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(nn.Module):
        def __init__(self, patch, in_chans, dim, bias):
            super().__init__()
            self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch, bias=bias)

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)  # B, N, C

    class VisionTransformer(nn.Module):
        """timm VisionTransformer restricted to what Tessera's configs use:
        CLS token, learned pos_embed added after the CLS concat, optional
        norm_pre (CLIP-style pre_norm, whose patch convolution has no bias),
        pre-LN blocks with GELU or QuickGELU, final norm, token pooling,
        linear head. Parameter names match timm."""

        def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000,
                     embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, qkv_bias=True,
                     norm_eps=1e-6, pre_norm=False, act="gelu"):
            super().__init__()
            n_patches = (img_size // patch_size) ** 2
            # timm: PatchEmbed(bias=not pre_norm)
            self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, bias=not pre_norm)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, embed_dim))
            self.norm_pre = nn.LayerNorm(embed_dim, eps=norm_eps) if pre_norm else nn.Identity()
            self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_eps, act)
                                          for _ in range(depth)])
            self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
            self.head = nn.Linear(embed_dim, num_classes)

        def forward(self, x):
            x = self.patch_embed(x)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = x + self.pos_embed
            x = self.norm_pre(x)
            x = self.blocks(x)
            x = self.norm(x)
            return self.head(x[:, 0])

    return VisionTransformer


def model_kwargs_from_config(cfg):
    """The module's keyword arguments from a timm config.json, reading the
    model_args keys the way Tessera's vit_hparams_from_timm does (same
    defaults); anything this module cannot express is refused."""
    ma = cfg.get("model_args", {})
    unsupported = []
    if not ma.get("class_token", True):
        unsupported.append("class_token=false")
    if (ma.get("act_layer") or "gelu") not in ("gelu", "quick_gelu"):
        unsupported.append(f"act_layer={ma.get('act_layer')}")
    if cfg.get("global_pool", "token") != "token":
        unsupported.append(f"global_pool={cfg.get('global_pool')}")
    if "block_attention" in ma:
        unsupported.append("block_attention")
    if unsupported:
        raise SystemExit("export_vit_onnx.py: unsupported config: " + ", ".join(unsupported))
    return dict(img_size=ma.get("img_size", 224), patch_size=ma.get("patch_size", 16),
                in_chans=cfg.get("pretrained_cfg", {}).get("input_size", [3])[0],
                num_classes=cfg.get("num_classes", 1000), embed_dim=ma["embed_dim"],
                depth=ma["depth"], num_heads=ma["num_heads"],
                mlp_ratio=ma.get("mlp_ratio", 4.0), qkv_bias=ma.get("qkv_bias", True),
                norm_eps=ma.get("norm_eps", 1e-6), pre_norm=ma.get("pre_norm", False),
                act=ma.get("act_layer") or "gelu")


def load_model(model_dir):
    """Builds the torch module for a timm-layout folder and loads its weights
    strictly (every tensor present, every shape equal, nothing left over)."""
    torch = _torch()
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    kwargs = model_kwargs_from_config(cfg)
    model = build_vit_class()(**kwargs)
    weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    state = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or bad:
        raise SystemExit(f"export_vit_onnx.py: {model_dir}: weights do not match the config: "
                         f"missing={missing[:5]} unexpected={extra[:5]} shape_mismatch={bad[:5]}")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, cfg, kwargs


# ---------------------------------------------------------------- random ViTs

# Random-weight benchmark models, one row each (timm names and model_args).
# `large` has the shapes of timm's vit_large_patch14_clip_336 (the LLaVA-1.5
# vision tower): 577 tokens, pre-norm with a bias-free patch convolution,
# QuickGELU, LayerNorm eps 1e-5 (timm builds it with nn.LayerNorm's default)
# and OpenAI CLIP's 768-wide projection as the head.
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PRESETS = {
    "tiny": dict(arch="vit_tiny_patch16_224", img_size=224, patch_size=16, embed_dim=192,
                 depth=12, heads=3, num_classes=1000, pre_norm=False, act="gelu",
                 norm_eps=1e-6, mean=[0.5] * 3, std=[0.5] * 3, crop_pct=0.9),
    "small": dict(arch="vit_small_patch16_224", img_size=224, patch_size=16, embed_dim=384,
                  depth=12, heads=6, num_classes=1000, pre_norm=False, act="gelu",
                  norm_eps=1e-6, mean=[0.5] * 3, std=[0.5] * 3, crop_pct=0.9),
    "large": dict(arch="vit_large_patch14_clip_336", img_size=336, patch_size=14,
                  embed_dim=1024, depth=24, heads=16, num_classes=768, pre_norm=True,
                  act="quick_gelu", norm_eps=1e-5, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
                  crop_pct=1.0),
}


def make_random(out_dir, seed, row):
    """Writes the preset `row` with random weights as a timm-layout folder.
    timm-style init (trunc_normal(0.02) weights, cls_token N(0, 1e-6)),
    then small random perturbations of LayerNorm gains/biases and Linear
    biases so that a parity test against these weights cannot pass with a
    swapped or ignored gain/bias. Deterministic in `seed`."""
    torch = _torch()
    torch.manual_seed(seed)
    kwargs = dict(img_size=row["img_size"], patch_size=row["patch_size"], in_chans=3,
                  num_classes=row["num_classes"], embed_dim=row["embed_dim"], depth=row["depth"],
                  num_heads=row["heads"], mlp_ratio=4.0, qkv_bias=True, norm_eps=row["norm_eps"],
                  pre_norm=row["pre_norm"], act=row["act"])
    model = build_vit_class()(**kwargs)
    nn = torch.nn
    g = torch.Generator().manual_seed(seed)

    def trunc_normal(t, std):
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=g).mul_(std).clamp_(-2 * std, 2 * std))

    trunc_normal(model.pos_embed, 0.02)
    with torch.no_grad():
        model.cls_token.copy_(torch.randn(model.cls_token.shape, generator=g) * 1e-6)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            trunc_normal(m.weight, 0.02)
            if m.bias is not None:
                with torch.no_grad():
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.02)
        elif isinstance(m, nn.LayerNorm):
            with torch.no_grad():
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.02 * torch.randn(m.bias.shape, generator=g))
    model.eval()

    os.makedirs(out_dir, exist_ok=True)
    tensors = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    img, dim, classes = row["img_size"], row["embed_dim"], row["num_classes"]
    cfg = {
        "architecture": row["arch"],
        "num_classes": classes,
        "num_features": dim,
        "global_pool": "token",
        "model_args": {"img_size": img, "patch_size": row["patch_size"], "embed_dim": dim,
                       "depth": row["depth"], "num_heads": row["heads"], "mlp_ratio": 4.0,
                       "qkv_bias": True, "class_token": True, "pre_norm": row["pre_norm"],
                       "norm_eps": row["norm_eps"], "act_layer": row["act"]},
        "pretrained_cfg": {
            "tag": f"random_seed{seed}",
            "input_size": [3, img, img],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": row["crop_pct"],
            "crop_mode": "center",
            "mean": row["mean"],
            "std": row["std"],
            "num_classes": classes,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "SOURCE.md"), "w") as f:
        f.write(f"# {row['arch']}, random weights (seed {seed})\n\n"
                "Generated by bench/export_vit_onnx.py make-random for benchmarking only; "
                "the logits are meaningless. timm tensor names and config.json layout.\n")
    n_params = sum(int(np.prod(v.shape)) for v in tensors.values())
    print(f"make-random: wrote {out_dir} ({len(tensors)} tensors, {n_params:,} parameters)",
          file=sys.stderr)


# ---------------------------------------------------------------- export

def synthetic_input(batch, in_chans, img_size, seed=0):
    """Fixed synthetic input in the normalised range, (B, C, H, W) float32."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(batch, in_chans, img_size, img_size)).astype(np.float32)


def export(model_dir, onnx_path, batch, opset, threads):
    torch = _torch()
    torch.set_num_threads(threads)
    model, cfg, kw = load_model(model_dir)
    x = torch.from_numpy(synthetic_input(batch, kw["in_chans"], kw["img_size"]))
    with torch.inference_mode():
        logits = model(x)
    if not torch.isfinite(logits).all():
        raise SystemExit(f"export_vit_onnx.py: non-finite logits from {model_dir}")
    if tuple(logits.shape) != (batch, kw["num_classes"]):
        raise SystemExit(f"export_vit_onnx.py: logits shape {tuple(logits.shape)}")

    os.makedirs(os.path.dirname(os.path.abspath(onnx_path)), exist_ok=True)
    tmp = onnx_path + ".tmp"
    # torch >= 2.9 exports through dynamo (and onnxscript) by default; the
    # TorchScript exporter needs nothing beyond torch.
    import inspect
    legacy_exporter = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    used = None
    errors = []
    for op in ([opset] if opset else [17, 16, 15, 14]):
        try:
            with torch.no_grad():
                torch.onnx.export(model, (x,), tmp, input_names=["pixel_values"],
                                  output_names=["logits"], opset_version=op,
                                  do_constant_folding=True, dynamic_axes=None, **legacy_exporter)
            used = op
            break
        except Exception as e:  # an older torch may not know this opset
            errors.append(f"opset {op}: {e}")
    if used is None:
        raise SystemExit("export_vit_onnx.py: torch.onnx.export failed:\n" + "\n".join(errors))
    os.replace(tmp, onnx_path)

    # Reference pair for the ORT harness: it checks its own logits against these.
    ref = {"model_dir": os.path.abspath(model_dir), "onnx": os.path.abspath(onnx_path),
           "opset": used, "batch": batch, "input_seed": 0,
           "input_shape": list(x.shape), "torch_version": torch.__version__,
           "logits_first_row_head": [float(v) for v in logits[0, :16]],
           "logits_argmax": [int(v) for v in logits.argmax(dim=-1)],
           "logits_sum": float(logits.double().sum())}
    with open(onnx_path + ".ref.json", "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    np.save(onnx_path + ".ref_input.npy", x.numpy())
    np.save(onnx_path + ".ref_logits.npy", logits.numpy())
    size_mb = os.path.getsize(onnx_path) / 1e6
    print(f"export: {onnx_path} (opset {used}, batch {batch}, {size_mb:.1f} MB), "
          f"logits finite, argmax {ref['logits_argmax'][:4]}", file=sys.stderr)


# ---------------------------------------------------------------- torch bench

def percentile(sorted_vals, q):
    """Linear interpolation between order statistics (numpy's default)."""
    if not sorted_vals:
        return float("nan")
    pos = (len(sorted_vals) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def bench(model_dir, batch, iters, warmup, threads, dtype="f32", serve=False):
    # libgomp reads this when torch loads. Its default spin-wait keeps the
    # cores busy that OpenBLAS's own GEMM threads need (see bench/README.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch = _torch()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    model, cfg, kw = load_model(model_dir)
    x = torch.from_numpy(synthetic_input(batch, kw["in_chans"], kw["img_size"]))
    if dtype == "bf16":  # weights and activations in bf16 (oneDNN's bf16 kernels where the CPU has them)
        model = model.to(torch.bfloat16)
        x = x.to(torch.bfloat16)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        if serve:
            from paired import serve as answer
            answer({"batch": batch, "threads": torch.get_num_threads(), "engine": "pytorch", "dtype": dtype,
                    "version": torch.__version__}, lambda: model(x))
            return
        for _ in range(iters):
            t0 = time.perf_counter_ns()
            model(x)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    print(json.dumps({"ms_p50": percentile(times, 0.5), "ms_p90": percentile(times, 0.9),
                      "ms_min": times[0], "batch": batch, "threads": torch.get_num_threads(),
                      "iters": iters, "warmup": warmup, "engine": "pytorch", "dtype": dtype,
                      "version": torch.__version__}))


# ---------------------------------------------------------------- parity

def write_png(path, rgb):
    """Writes an 8-bit RGB image (H, W, 3 uint8) as a PNG (zlib, no filter)."""
    import zlib
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


def parity_image(cfg, seed=0):
    """A random RGB image that timm's eval transform (and Tessera's) maps to
    its centre crop without resampling: the image is already scale_size =
    floor(input / crop_pct) square, so Resize is a copy, then CenterCrop cuts
    at round((scale - input) / 2). Returns (uint8 image, float32 (1, 3, H, W)
    model input normalised with the config's mean/std)."""
    pc = cfg.get("pretrained_cfg", {})
    _, h, w = pc.get("input_size", [3, 224, 224])
    if h != w:
        raise SystemExit("export_vit_onnx.py parity: only square inputs are supported")
    if pc.get("crop_mode", "center") != "center":
        raise SystemExit("export_vit_onnx.py parity: only crop_mode 'center' is supported")
    scale = math.floor(h / pc.get("crop_pct", 0.875))
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(scale, scale, 3), dtype=np.uint8)
    off = int(round((scale - h) / 2.0))
    crop = img[off:off + h, off:off + w].astype(np.float32) / np.float32(255.0)
    mean = np.asarray(pc.get("mean", [0.485, 0.456, 0.406]), dtype=np.float32)
    std = np.asarray(pc.get("std", [0.229, 0.224, 0.225]), dtype=np.float32)
    x = ((crop - mean) / std).transpose(2, 0, 1)[None]
    return img, np.ascontiguousarray(x, dtype=np.float32)


def parity(model_dir, tessera, threads, onnx_paths, tol, work_dir):
    """Tessera vs this module on one image: `tessera classify --logits` on a
    PNG against the module on the same normalised pixels. Prints one JSON
    object; exits 1 when max |diff| > tol * max(1, max |ref|). When they
    agree, for each ONNX file (static batch B) it saves
    <onnx>.tessera_input.npy (the input repeated B times) and
    <onnx>.tessera_logits.npy (Tessera's outputs, the same repeat) for
    ort_bench.js --check-tessera."""
    import subprocess
    torch = _torch()
    torch.set_num_threads(threads)
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    img, x = parity_image(cfg)
    os.makedirs(work_dir, exist_ok=True)
    png = os.path.join(work_dir, os.path.basename(os.path.normpath(model_dir)) + ".parity.png")
    write_png(png, img)
    p = subprocess.run([tessera, "classify", "--model", model_dir, "--format", "jsonl", "--logits",
                        "--top", "1", "--threads", str(threads), png],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"export_vit_onnx.py parity: tessera classify failed: {p.stderr.strip()[-300:]}")
    got = np.asarray(json.loads(p.stdout.strip().splitlines()[-1])["logits"], dtype=np.float32)
    model, _, _ = load_model(model_dir)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x))[0].numpy()
    if got.shape != ref.shape:
        raise SystemExit(f"export_vit_onnx.py parity: Tessera gave {got.shape[0]} outputs, "
                         f"PyTorch {ref.shape[0]}")
    max_abs = float(np.abs(got - ref).max())
    max_ref = float(np.abs(ref).max())
    ok = bool(np.isfinite(got).all()) and max_abs <= tol * max(1.0, max_ref)
    for onnx in onnx_paths:
        files = (onnx + ".tessera_input.npy", onnx + ".tessera_logits.npy")
        for path in files:  # never leave outputs of an earlier binary behind
            if os.path.exists(path):
                os.remove(path)
        if not ok:
            continue
        with open(onnx + ".ref.json") as f:
            batch = json.load(f)["batch"]
        np.save(files[0], np.repeat(x, batch, axis=0))
        np.save(files[1], np.repeat(got[None], batch, axis=0))
    print(json.dumps({"model": os.path.abspath(model_dir), "outputs": int(ref.shape[0]),
                      "max_abs_diff": max_abs, "max_abs_ref": max_ref, "tol": tol, "ok": ok,
                      "argmax_pytorch": int(ref.argmax()), "argmax_tessera": int(got.argmax())}))
    if not ok:
        raise SystemExit(f"export_vit_onnx.py parity: Tessera and PyTorch differ on {model_dir}: "
                         f"max |diff| {max_abs:.3g} (ref max {max_ref:.3g})")


# ---------------------------------------------------------------- CLI

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    pe = sub.add_parser("export", help="timm-layout folder -> ONNX (static batch)")
    pe.add_argument("--model", required=True, help="folder with model.safetensors + config.json")
    pe.add_argument("--out", required=True, help="output .onnx path")
    pe.add_argument("--batch", type=int, default=1)
    pe.add_argument("--opset", type=int, default=0, help="0: highest of 17..14 that works")
    pe.add_argument("--threads", type=int, default=2)

    pr = sub.add_parser("make-random", help="random timm-layout ViT folder (+ ONNX with --onnx)")
    pr.add_argument("--out-dir", required=True)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--preset", choices=sorted(PRESETS), default="small",
                    help="tiny: ViT-Ti/16 224; small: ViT-S/16 224; large: vit_large_patch14_clip_336 shapes")
    # Overrides of the preset's row.
    pr.add_argument("--embed-dim", type=int)
    pr.add_argument("--depth", type=int)
    pr.add_argument("--heads", type=int)
    pr.add_argument("--num-classes", type=int)
    pr.add_argument("--img-size", type=int)
    pr.add_argument("--patch-size", type=int)
    pr.add_argument("--arch")
    pr.add_argument("--onnx", help="also export this .onnx path")
    pr.add_argument("--batch", type=int, default=1)
    pr.add_argument("--opset", type=int, default=0)
    pr.add_argument("--threads", type=int, default=2)

    pb = sub.add_parser("bench", help="time the torch forward pass; prints one JSON object")
    pb.add_argument("--model", required=True)
    pb.add_argument("--batch", type=int, default=1)
    pb.add_argument("--iters", type=int, default=20)
    pb.add_argument("--warmup", type=int, default=5)
    pb.add_argument("--threads", type=int, default=2)
    pb.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    pb.add_argument("--serve", action="store_true",
                    help="after the warm-up, answer bench/paired.py instead of timing --iters")

    pp = sub.add_parser("parity", help="Tessera vs this module on one image; prints one JSON object")
    pp.add_argument("--model", required=True)
    pp.add_argument("--tessera", required=True, help="path of the tessera binary")
    pp.add_argument("--threads", type=int, default=2)
    pp.add_argument("--onnx", action="append", default=[],
                    help="save the input and Tessera's outputs next to this exported .onnx")
    pp.add_argument("--tol", type=float, default=1e-3, help="relative to max(1, max |ref|)")
    pp.add_argument("--work-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                       ".cache", "parity"))

    a = p.parse_args(argv)
    if a.cmd == "export":
        export(a.model, a.out, a.batch, a.opset, a.threads)
    elif a.cmd == "make-random":
        row = dict(PRESETS[a.preset])
        for key, value in (("embed_dim", a.embed_dim), ("depth", a.depth), ("heads", a.heads),
                           ("num_classes", a.num_classes), ("img_size", a.img_size),
                           ("patch_size", a.patch_size), ("arch", a.arch)):
            if value is not None:
                row[key] = value
        make_random(a.out_dir, a.seed, row)
        if a.onnx:
            export(a.out_dir, a.onnx, a.batch, a.opset, a.threads)
    elif a.cmd == "bench":
        bench(a.model, a.batch, a.iters, a.warmup, a.threads, a.dtype, a.serve)
    elif a.cmd == "parity":
        parity(a.model, a.tessera, a.threads, a.onnx, a.tol, a.work_dir)


if __name__ == "__main__":
    main()
