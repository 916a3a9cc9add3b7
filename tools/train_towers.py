#!/usr/bin/env python3
"""Three ShapeScenes vision towers trained with one recipe, for the encoder
architecture comparison (docs/results/shapescenes/towers.md):

  vit       plain global attention in every block (the demo model's tower);
  biformer  BiFormer bi-level routing attention with local context
            enhancement (LCE, a depthwise 5x5 convolution of V) in the first
            four blocks, global attention in the last two (BiFormer keeps
            plain attention in its last stage);
  davit     DaViT's dual attention: 7x7 window attention and channel-group
            attention alternating, block by block.

All three are the demo tower's CLIP-style ViT (patch 16, 224 px, CLS token,
6 blocks x 192, 3 heads, quick_gelu, pre-LN, absolute position embedding) and
differ only in the attention of their blocks, so the comparison isolates the
attention kind: BiFormer's and DaViT's convolutional position encodings and
hierarchical stages are left out. The CLS token attends globally in routing
and window blocks and is a key of every query region / window; in channel
blocks it is one of the tokens (METHODS.md sections 4 and 5; routing uses the
released models' C^-1/2 softmax scale).

Recipe (train_shapescenes.train_vision): 1500 steps x 256 scenes, AdamW 1e-3,
one-cycle; CLS predicts shape, colour and shape-colour presence (multi-label)
and the object count; an auxiliary per-patch shape/colour target at the
feature layer (block 5 input).

Each tower is saved as a timm-style folder Tessera loads (config.json with
model_args.block_attention, model.safetensors in f16, labels.tsv); the head
is [presence labels..., count 1..5]. Writes OUT/towers-reference.json: held-out
accuracy (1000 scenes) and the logits of held-out scenes 0..3 for the
engine's parity test.

  python3 tools/train_towers.py --out OUT [--quick]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapescenes as ss  # noqa: E402
from train_shapescenes import MEAN, STD, optimizer_step, pixels, render_many, vision_targets  # noqa: E402
from train_shapescenes import ClipMlp as Mlp  # noqa: E402  (fc1 / fc2, quick_gelu: timm's names too)

GRID = 14  # 224 / 16


def attention_plan(kind, depth):
    """model_args.block_attention for one tower kind."""
    if kind == "vit":
        return [{"kind": "global"} for _ in range(depth)]
    if kind == "biformer":
        routed = {"kind": "routing", "regions": 7, "topk": 16, "scale": "channel", "lce_kernel": 5}
        return [dict(routed) if i < depth - 2 else {"kind": "global"} for i in range(depth)]
    if kind == "davit":
        return [{"kind": "window", "window": 7} if i % 2 == 0 else {"kind": "channel", "groups": 6}
                for i in range(depth)]
    raise ValueError(kind)


def heads_attend(q, k, v, scale):
    """q [..., h, nq, d], k/v [..., h, nk, d] -> [..., h, nq, d]."""
    return torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1) @ v


def grid_cells(x, cells):
    """[B, 196, C] raster patches -> [B, cells^2, (14/cells)^2, C], cells and tokens in raster order."""
    b, _, c = x.shape
    s = GRID // cells
    return x.view(b, cells, s, cells, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, cells * cells, s * s, c)


def cells_to_grid(x, cells):
    b, _, _, c = x.shape
    s = GRID // cells
    return x.view(b, cells, cells, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, GRID * GRID, c)


class TowerAttention(nn.Module):
    def __init__(self, d, heads, spec):
        super().__init__()
        self.d, self.heads, self.spec = d, heads, spec
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        if spec.get("lce_kernel"):
            k = spec["lce_kernel"]
            self.lepe = nn.Conv2d(d, d, k, padding=k // 2, groups=d)

    def split_heads(self, x):  # [..., n, C] -> [..., h, n, d]
        return x.unflatten(-1, (self.heads, -1)).transpose(-2, -3)

    def merge_heads(self, x):
        return x.transpose(-2, -3).flatten(-2)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).split(c, -1)
        kind = self.spec["kind"]
        if kind == "channel":
            g = self.spec["groups"]
            qg, kg, vg = (t.view(b, n, g, c // g).transpose(1, 2) for t in (q, k, v))  # [B, G, N, Cg]
            m = torch.softmax((kg * (c // g) ** -0.5).transpose(-1, -2) @ vg, dim=-1)  # [B, G, Cg, Cg]
            return self.proj((qg @ m.transpose(-1, -2)).transpose(1, 2).reshape(b, n, c))
        scale = c ** -0.5 if self.spec.get("scale") == "channel" else (c // self.heads) ** -0.5
        qh, kh, vh = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # [B, h, N, d]
        cls_out = heads_attend(qh[:, :, :1], kh, vh, scale)  # CLS attends globally: [B, h, 1, d]
        if kind == "global":
            out = heads_attend(qh, kh, vh, scale)
            return self.proj(self.merge_heads(out))
        if kind == "window":
            cells = GRID // self.spec["window"]
            qw, kw, vw = (grid_cells(t[:, 1:], cells) for t in (q, k, v))  # [B, W, 49, C]
        else:  # routing: Q_r, K_r = region means at full width; top-k key regions per query region
            cells = self.spec["regions"]
            qw, kr, vr = (grid_cells(t[:, 1:], cells) for t in (q, k, v))  # [B, R, 4, C]
            a_r = qw.mean(2) @ kr.mean(2).transpose(-1, -2)  # [B, R, R]
            idx = a_r.topk(self.spec["topk"], dim=-1).indices  # [B, R, topk]
            bi = torch.arange(b, device=x.device)[:, None, None]
            kw, vw = kr[bi, idx].flatten(2, 3), vr[bi, idx].flatten(2, 3)  # [B, R, topk * 4, C]
        groups = qw.shape[1]
        kw = torch.cat([k[:, None, :1].expand(-1, groups, -1, -1), kw], 2)  # CLS is a key of every group
        vw = torch.cat([v[:, None, :1].expand(-1, groups, -1, -1), vw], 2)
        out = heads_attend(self.split_heads(qw), self.split_heads(kw), self.split_heads(vw), scale)
        patches = cells_to_grid(self.merge_heads(out), cells)  # [B, 196, C]
        if hasattr(self, "lepe"):  # LCE: depthwise conv of V over the patch grid, added before proj
            vmap = v[:, 1:].transpose(1, 2).reshape(b, c, GRID, GRID)
            patches = patches + self.lepe(vmap).flatten(2).transpose(1, 2)
        out = torch.cat([self.merge_heads(cls_out), patches], 1)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, d, heads, hidden, spec):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-5), nn.LayerNorm(d, eps=1e-5)
        self.attn, self.mlp = TowerAttention(d, heads, spec), Mlp(d, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.proj = nn.Conv2d(3, d, 16, 16, bias=False)


class Tower(nn.Module):
    """timm names: what Tessera's ViT loader reads."""

    def __init__(self, plan, d, heads, hidden, classes):
        super().__init__()
        self.plan = plan
        self.patch_embed = PatchEmbed(d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, GRID * GRID + 1, d) * 0.02)
        self.norm_pre = nn.LayerNorm(d, eps=1e-5)
        self.blocks = nn.ModuleList(Block(d, heads, hidden, s) for s in plan)
        self.norm = nn.LayerNorm(d, eps=1e-5)
        self.head = nn.Linear(d, classes)

    def forward(self, px):
        x = self.patch_embed.proj(px).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = self.norm_pre(x)
        states = [x]
        for blk in self.blocks:
            x = blk(x)
            states.append(x)
        return self.head(self.norm(x[:, 0])), states


def train(tower, imgs, scenes, device, steps, batch):
    cls_t, count_t, ps_t, pc_t = (torch.as_tensor(a, device=device) for a in vision_targets(scenes, GRID))
    labels = cls_t.shape[1]
    d = tower.norm.weight.shape[0]
    aux = nn.ModuleDict({"shape": nn.Linear(d, len(ss.SHAPES) + 1),
                         "colour": nn.Linear(d, len(ss.COLOUR_NAMES) + 1)}).to(device)
    params = list(tower.parameters()) + list(aux.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator(device="cpu").manual_seed(0)  # the same scene batches for every tower
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(scenes), (batch,), generator=g).to(device)
        px = pixels(imgs[idx.cpu().numpy()], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, states = tower(px)
            feat = states[-2][:, 1:]  # the feature layer LLaVA reads
            loss = (F.binary_cross_entropy_with_logits(logits[:, :labels].float(), cls_t[idx])
                    + F.cross_entropy(logits[:, labels:].float(), count_t[idx])
                    + F.cross_entropy(aux["shape"](feat).flatten(0, 1).float(), ps_t[idx].flatten())
                    + F.cross_entropy(aux["colour"](feat).flatten(0, 1).float(), pc_t[idx].flatten()))
        optimizer_step(opt, sched, params, loss, tower.kind, step, steps, t0)
    return time.time() - t0


@torch.no_grad()
def accuracy(tower, imgs, scenes, device):
    cls_t, count_t, _, _ = vision_targets(scenes, GRID)
    labels = cls_t.shape[1]
    out = []
    for s in range(0, len(scenes), 250):
        out.append(tower(pixels(imgs[s:s + 250], device))[0].float().cpu().numpy())
    logits = np.concatenate(out)
    preds, counts = logits[:, :labels] > 0, logits[:, labels:].argmax(1)
    return {"cls_multilabel_exact": float((preds == cls_t).all(1).mean()),
            "cls_label_accuracy": float((preds == cls_t).mean()),
            "count_accuracy": float((counts == count_t).mean())}


def label_names():
    names = [f"shape:{s}" for s in ss.SHAPES] + [f"colour:{c}" for c in ss.COLOUR_NAMES]
    names += [f"object:{c} {s}" for s in ss.SHAPES for c in ss.COLOUR_NAMES]
    return names + [f"count:{n}" for n in range(1, 6)]


def export(tower, out_dir, d, heads, hidden):
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    sd = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in tower.state_dict().items()}
    save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    names = label_names()
    cfg = {
        "architecture": f"shapescenes_tower_{tower.kind}",
        "num_classes": len(names),
        "num_features": d,
        "global_pool": "token",
        "model_args": {"img_size": 224, "patch_size": 16, "embed_dim": d, "depth": len(tower.plan),
                       "num_heads": heads, "mlp_ratio": hidden / d, "qkv_bias": True, "class_token": True,
                       "pre_norm": True, "norm_eps": 1e-5, "act_layer": "quick_gelu",
                       "block_attention": tower.plan},
        "pretrained_cfg": {"input_size": [3, 224, 224], "fixed_input_size": True, "interpolation": "bicubic",
                           "crop_pct": 1.0, "crop_mode": "center", "mean": MEAN.tolist(), "std": STD.tolist(),
                           "num_classes": len(names), "first_conv": "patch_embed.proj", "classifier": "head"},
    }
    json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"), indent=1)
    with open(os.path.join(out_dir, "labels.tsv"), "w") as f:
        for i, n in enumerate(names):
            f.write(f"{i}\t{n}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--kinds", default="vit,biformer,davit")
    ap.add_argument("--train-scenes", type=int, default=40000)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-scenes", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--reference-only", action="store_true",
                    help="no training: evaluate the towers already in --out and record their reference logits")
    args = ap.parse_args()
    if args.quick:
        args.train_scenes, args.steps, args.eval_scenes = 500, 3, 8
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    d, heads, hidden, depth = 192, 3, 768, 6
    t0 = time.time()
    imgs, scenes = (None, []) if args.reference_only else render_many("train", args.train_scenes, args.workers)
    h_imgs, h_scenes = render_many("heldout", args.eval_scenes, args.workers)
    print(f"rendered in {time.time() - t0:.0f}s", flush=True)
    classes = len(label_names())
    record_path = os.path.join(args.out, "towers-reference.json")
    record = {"recipe": {"steps": args.steps, "batch": 256, "train_scenes": args.train_scenes,
                         "eval_scenes": args.eval_scenes}, "towers": {}}
    if args.reference_only and os.path.exists(record_path):  # keep the training run's record
        record = json.load(open(record_path))
    for kind in args.kinds.split(","):
        torch.manual_seed(0)
        out_dir = os.path.join(args.out, kind)
        seconds = None
        if not args.reference_only:
            tower = Tower(attention_plan(kind, depth), d, heads, hidden, classes).to(device)
            tower.kind = kind
            seconds = train(tower, imgs, scenes, device, args.steps, 256 if not args.quick else 8)
            export(tower.eval(), out_dir, d, heads, hidden)
        # Reload the f16 weights in f32: what Tessera runs.
        from safetensors.torch import load_file
        tower = Tower(attention_plan(kind, depth), d, heads, hidden, classes).to(device).float().eval()
        tower.load_state_dict({k: v.float() for k, v in load_file(os.path.join(out_dir, "model.safetensors")).items()})
        acc = accuracy(tower, h_imgs, h_scenes, device)
        with torch.no_grad():  # on the CPU in f32: the engine's parity reference
            ref = tower.cpu()(pixels(h_imgs[:4], torch.device("cpu")))[0].numpy()
        entry = record["towers"].setdefault(kind, {})
        if seconds is not None:
            entry["train_seconds"] = seconds
        entry["heldout"] = acc
        entry["logits_heldout_0_3"] = [[round(float(v), 6) for v in row] for row in ref]
        print(kind, acc, f"{seconds or 0:.0f}s", flush=True)
        json.dump(record, open(record_path, "w"), indent=1)


if __name__ == "__main__":
    main()
