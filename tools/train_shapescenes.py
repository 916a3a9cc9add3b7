#!/usr/bin/env python3
"""Trains Tessera's demo vision-language model on ShapeScenes and writes it as
a Hugging Face LLaVA folder (transformers 4.x layout, f16 weights in two
shards, tokenizer.json, preprocessor_config.json).

  1. vision tower: a CLIP-style ViT (patch 16, 224 px, 197 tokens) trained so
     its CLS token predicts which shapes, colours and shape-colour pairs are
     present and how many objects there are (multi-label + count), with an
     auxiliary per-patch shape/colour target at the feature layer; then frozen,
     as LLaVA freezes CLIP;
  2. projector + LLaMA-style decoder (RMSNorm, RoPE, SwiGLU, 6 layers) trained
     on captions, yes/no questions and counting questions, loss on answers only.

The modules mirror transformers' CLIPVisionTransformer, LlavaMultiModalProjector
and LlamaForCausalLM exactly (names, LayerNorm/RMSNorm eps, quick_gelu, exact
GELU, rotate-half RoPE), so the exported folder runs unchanged in transformers
and in Tessera. After export the script reloads the f16 weights in f32 and
records, for 50 held-out scenes, the prompt ids and greedy tokens (the parity
reference), and evaluates the held-out split.

Needs torch, tokenizers and transformers (the tokenizer is trained with the
`tokenizers` library and wrapped by transformers for saving). GPU recommended:
  python tools/train_shapescenes.py --out OUT [--quick]
"""
import argparse
import json
import os
import sys
import time
from multiprocessing import Pool

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapescenes as ss  # noqa: E402
from hf_folder import save_sharded  # noqa: E402

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])
PROMPT = "USER: <image>\n{} ASSISTANT:"


# ---------------------------------------------------------------- models (HF names)

class ClipAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, want_attn=False):
        b, n, d = x.shape
        h = self.heads
        q = self.q_proj(x).view(b, n, h, -1).transpose(1, 2)
        k = self.k_proj(x).view(b, n, h, -1).transpose(1, 2)
        v = self.v_proj(x).view(b, n, h, -1).transpose(1, 2)
        a = torch.softmax((q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5), dim=-1)
        out = (a @ v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(out), (a if want_attn else None)


class ClipMlp(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        x = self.fc1(x)
        return self.fc2(x * torch.sigmoid(1.702 * x))  # quick_gelu


class ClipLayer(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(d, eps=1e-5), nn.LayerNorm(d, eps=1e-5)
        self.self_attn, self.mlp = ClipAttention(d, heads), ClipMlp(d, hidden)

    def forward(self, x, want_attn=False):
        y, a = self.self_attn(self.layer_norm1(x), want_attn)
        x = x + y
        return x + self.mlp(self.layer_norm2(x)), a


class ClipEmbeddings(nn.Module):
    def __init__(self, d, patch, image):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(d) * 0.02)
        self.patch_embedding = nn.Conv2d(3, d, patch, patch, bias=False)
        self.position_embedding = nn.Embedding((image // patch) ** 2 + 1, d)

    def forward(self, px):
        x = self.patch_embedding(px).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], 1)
        return x + self.position_embedding.weight[None]


class ClipEncoder(nn.Module):
    def __init__(self, d, heads, hidden, layers):
        super().__init__()
        self.layers = nn.ModuleList(ClipLayer(d, heads, hidden) for _ in range(layers))


class ClipVision(nn.Module):
    """transformers' CLIPVisionTransformer: hidden_states[k] = after k layers."""

    def __init__(self, c):
        super().__init__()
        self.embeddings = ClipEmbeddings(c["v_dim"], c["patch"], c["image"])
        self.pre_layrnorm = nn.LayerNorm(c["v_dim"], eps=1e-5)
        self.encoder = ClipEncoder(c["v_dim"], c["v_heads"], c["v_mlp"], c["v_layers"])
        self.post_layernorm = nn.LayerNorm(c["v_dim"], eps=1e-5)

    def forward(self, px, upto=None, want_attn=False):
        x = self.pre_layrnorm(self.embeddings(px))
        states, attns = [x], []
        for layer in self.encoder.layers[:upto]:
            x, a = layer(x, want_attn)
            states.append(x)
            attns.append(a)
        return states, attns


class Projector(nn.Module):
    def __init__(self, vd, td):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(vd, td), nn.Linear(td, td)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x)))


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, d, heads, kv):
        super().__init__()
        self.heads, self.kv, self.hd = heads, kv, d // heads
        self.q_proj = nn.Linear(d, heads * self.hd, bias=False)
        self.k_proj = nn.Linear(d, kv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, kv * self.hd, bias=False)
        self.o_proj = nn.Linear(heads * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask, cache=None):
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if cache is not None:
            if cache.get("k") is not None:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        rep = self.heads // self.kv
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        s = (q @ k.transpose(-1, -2)) * self.hd ** -0.5
        if mask is not None:
            s = s + mask
        a = torch.softmax(s.float(), dim=-1).to(q.dtype)
        return self.o_proj((a @ v).transpose(1, 2).reshape(b, n, -1))


class LlamaMlp(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(c["t_dim"]), RMSNorm(c["t_dim"])
        self.self_attn = LlamaAttention(c["t_dim"], c["t_heads"], c["t_kv"])
        self.mlp = LlamaMlp(c["t_dim"], c["t_mlp"])

    def forward(self, x, cos, sin, mask, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab"], c["t_dim"])
        self.layers = nn.ModuleList(LlamaLayer(c) for _ in range(c["t_layers"]))
        self.norm = RMSNorm(c["t_dim"])


class Llava(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.vision_tower = nn.Module()
        self.vision_tower.vision_model = ClipVision(c)
        self.multi_modal_projector = Projector(c["v_dim"], c["t_dim"])
        self.language_model = nn.Module()
        self.language_model.model = LlamaModel(c)
        self.language_model.lm_head = nn.Linear(c["t_dim"], c["vocab"], bias=False)
        hd = c["t_dim"] // c["t_heads"]
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        self.register_buffer("inv_freq", inv, persistent=False)

    def image_features(self, px):
        states, _ = self.vision_tower.vision_model(px, upto=self.c["v_layers"] - 1)
        return self.multi_modal_projector(states[-1][:, 1:])  # layer -2, strategy default

    def rope(self, positions, dtype):
        freqs = positions[..., None].float() * self.inv_freq[None, None]
        emb = torch.cat([freqs, freqs], -1)
        return emb.cos()[:, None].to(dtype), emb.sin()[:, None].to(dtype)

    def decode(self, embeds, positions, mask, caches=None):
        lm = self.language_model.model
        cos, sin = self.rope(positions, embeds.dtype)
        x = embeds
        for i, layer in enumerate(lm.layers):
            x = layer(x, cos, sin, mask, None if caches is None else caches[i])
        return self.language_model.lm_head(lm.norm(x))


# ---------------------------------------------------------------- data

def render(args):
    split, start, count = args
    imgs, scenes = [], []
    for i in range(start, start + count):
        img, scene = ss.make_scene(split, i)
        imgs.append(np.asarray(img, dtype=np.uint8))
        scenes.append(scene)
    return np.stack(imgs), scenes


def render_many(split, count, workers):
    chunk = 500
    jobs = [(split, s, min(chunk, count - s)) for s in range(0, count, chunk)]
    with Pool(workers) as pool:
        parts = pool.map(render, jobs)
    return np.concatenate([p[0] for p in parts]), [s for p in parts for s in p[1]]


def pixels(uint8_batch, device):
    x = torch.as_tensor(uint8_batch, device=device).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN.to(device)[:, None, None]) / STD.to(device)[:, None, None]


def vision_targets(scenes, grid):
    n = len(scenes)
    cls = np.zeros((n, len(ss.SHAPES) + len(ss.COLOUR_NAMES) + len(ss.SHAPES) * len(ss.COLOUR_NAMES)), np.float32)
    count = np.zeros(n, np.int64)
    patch_shape = np.full((n, grid * grid), len(ss.SHAPES), np.int64)  # last = background
    patch_colour = np.full((n, grid * grid), len(ss.COLOUR_NAMES), np.int64)
    cell = ss.SIZE / grid
    centres = (np.arange(grid) + 0.5) * cell
    for i, s in enumerate(scenes):
        count[i] = len(s["objects"]) - 1
        for o in s["objects"]:
            si, ci = ss.SHAPES.index(o["shape"]), ss.COLOUR_NAMES.index(o["colour"])
            cls[i, si] = cls[i, len(ss.SHAPES) + ci] = 1
            cls[i, len(ss.SHAPES) + len(ss.COLOUR_NAMES) + si * len(ss.COLOUR_NAMES) + ci] = 1
            dy = (centres[:, None] - o["cy"]) ** 2
            dx = (centres[None, :] - o["cx"]) ** 2
            inside = (dy + dx < (o["radius"] * 0.9) ** 2).reshape(-1)
            patch_shape[i, inside], patch_colour[i, inside] = si, ci
    return cls, count, patch_shape, patch_colour


def examples_for(scene, rng, tasks):
    """(prompt, answer) pairs for one scene."""
    out = []
    if "caption" in tasks:
        out.append((ss.CAPTION_PROMPT, scene["caption"]))
    for q in ss.questions(scene, rng):
        if q["type"] in tasks:
            out.append((q["prompt"], q["answer"]))
    return out


# ---------------------------------------------------------------- tokenizer

def train_tokenizer(out_dir, corpus):
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=512, special_tokens=["<s>", "</s>"], show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    fast.save_pretrained(out_dir)
    return fast


def prompt_ids(tok, prompt, visual):
    ids = tok(PROMPT.format(prompt))["input_ids"]
    image = tok.convert_tokens_to_ids("<image>")
    out = []
    for i in ids:
        out.extend([image] * visual if i == image else [i])
    return out


# ---------------------------------------------------------------- training

def optimizer_step(opt, sched, params, loss, what, step, steps, t0):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    if step % 200 == 0 or step == steps - 1:
        print(f"{what} step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)


def train_vision(model, imgs, scenes, c, device, steps, batch):
    grid = c["image"] // c["patch"]
    cls_t, count_t, ps_t, pc_t = (torch.as_tensor(a, device=device) for a in vision_targets(scenes, grid))
    vt = model.vision_tower.vision_model
    d = c["v_dim"]
    heads = nn.ModuleDict({
        "cls": nn.Linear(d, cls_t.shape[1]), "count": nn.Linear(d, 5),
        "shape": nn.Linear(d, len(ss.SHAPES) + 1), "colour": nn.Linear(d, len(ss.COLOUR_NAMES) + 1)}).to(device)
    params = list(vt.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    n = len(scenes)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), device=device)
        px = pixels(imgs[idx.cpu().numpy()], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            states, _ = vt(px)
            cls = vt.post_layernorm(states[-1][:, 0])
            feat = states[-2][:, 1:]  # the feature layer LLaVA reads
            loss = (F.binary_cross_entropy_with_logits(heads["cls"](cls).float(), cls_t[idx])
                    + F.cross_entropy(heads["count"](cls).float(), count_t[idx])
                    + F.cross_entropy(heads["shape"](feat).flatten(0, 1).float(), ps_t[idx].flatten())
                    + F.cross_entropy(heads["colour"](feat).flatten(0, 1).float(), pc_t[idx].flatten()))
        optimizer_step(opt, sched, params, loss, "vision", step, steps, t0)
    return heads


def vision_accuracy(model, heads, imgs, scenes, c, device):
    grid = c["image"] // c["patch"]
    cls_t, count_t, _, _ = vision_targets(scenes, grid)
    vt = model.vision_tower.vision_model
    preds, counts = [], []
    with torch.no_grad():
        for s in range(0, len(scenes), 256):
            states, _ = vt(pixels(imgs[s:s + 256], device))
            cls = vt.post_layernorm(states[-1][:, 0])
            preds.append((heads["cls"](cls) > 0).float().cpu().numpy())
            counts.append(heads["count"](cls).argmax(-1).cpu().numpy())
    preds, counts = np.concatenate(preds), np.concatenate(counts)
    exact = float((preds == cls_t).all(1).mean())
    label_acc = float((preds == cls_t).mean())
    return {"cls_multilabel_exact": exact, "cls_label_accuracy": label_acc,
            "count_accuracy": float((counts == count_t).mean())}


def make_batch(model, tok, imgs, scenes, rng, batch, device, c, tasks):
    visual = (c["image"] // c["patch"]) ** 2
    idx = rng.integers(0, len(scenes), batch)
    seqs, targets = [], []
    eos = tok.eos_token_id
    for i in idx:
        pairs = examples_for(scenes[i], rng, tasks)
        # Balanced: captions 40%, yes 20%, no 20%, counts 20% (a scene has one
        # positive and three negatives, so drawing pairs uniformly biases to "no").
        u = rng.random()
        want = "caption" if u < 0.4 else "yes" if u < 0.6 else "no" if u < 0.8 else "count"
        pool = [(p, a) for p, a in pairs if (want == "caption" and p == ss.CAPTION_PROMPT) or a == want or
                (want == "count" and a in ss.NUMBERS)] or pairs
        prompt, answer = pool[int(rng.integers(len(pool)))]
        p = prompt_ids(tok, prompt, visual)
        a = tok(" " + answer, add_special_tokens=False)["input_ids"] + [eos]
        seqs.append(p + a)
        targets.append([-100] * len(p) + a)
    T = max(len(s) for s in seqs)
    pad = tok.pad_token_id
    ids = torch.full((batch, T), pad, dtype=torch.long)
    tgt = torch.full((batch, T), -100, dtype=torch.long)
    for b, (s, t) in enumerate(zip(seqs, targets)):
        ids[b, :len(s)], tgt[b, :len(t)] = torch.tensor(s), torch.tensor(t)
    return torch.as_tensor(idx), ids.to(device), tgt.to(device)


def embed(model, ids, feats, image_id):
    x = model.language_model.model.embed_tokens(ids)
    mask = ids == image_id
    x = x.clone()
    x[mask] = feats.reshape(-1, feats.shape[-1]).to(x.dtype)
    return x


def causal_mask(T, device, dtype):
    return torch.triu(torch.full((T, T), float("-inf"), device=device, dtype=dtype), 1)


def train_decoder(model, tok, imgs, scenes, c, device, steps, batch, seed, lr=1e-3):
    rng = np.random.default_rng(seed)
    image_id = tok.convert_tokens_to_ids("<image>")
    params = list(model.multi_modal_projector.parameters()) + list(model.language_model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0 = time.time()
    for step in range(steps):
        idx, ids, tgt = make_batch(model, tok, imgs, scenes, rng, batch, device, c, ("caption", "exist", "count"))
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            states, _ = model.vision_tower.vision_model(pixels(imgs[idx.numpy()], device), upto=c["v_layers"] - 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            feats = model.multi_modal_projector(states[-1][:, 1:].float())
            x = embed(model, ids, feats, image_id)
            T = ids.shape[1]
            pos = torch.arange(T, device=device)[None].expand(ids.shape[0], -1)
            logits = model.decode(x, pos, causal_mask(T, device, torch.float32))
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tgt[:, 1:].flatten(), ignore_index=-100)
        optimizer_step(opt, sched, params, loss, "decoder", step, steps, t0)


@torch.no_grad()
def greedy_from_ids(model, ids, feats, image_id, eos, c, max_new=64):
    """Greedy decoding with a KV cache from prompt ids and image features."""
    device = feats.device
    x = embed(model, torch.tensor([ids], device=device), feats, image_id)
    T = len(ids)
    caches = [{} for _ in range(c["t_layers"])]
    logits = model.decode(x, torch.arange(T, device=device)[None], causal_mask(T, device, x.dtype), caches)[0, -1]
    out, margins = [], []
    for step in range(max_new):
        top = torch.topk(logits.float(), 2)
        margins.append(float(top.values[0] - top.values[1]))
        nxt = int(top.indices[0])
        out.append(nxt)
        if nxt == eos:
            break
        e = model.language_model.model.embed_tokens(torch.tensor([[nxt]], device=device))
        logits = model.decode(e, torch.tensor([[T + step]], device=device), None, caches)[0, -1]
    return ids, out, margins


@torch.no_grad()
def greedy(model, tok, img_uint8, prompt, device, c, max_new=64):
    """Greedy decoding, f32: the parity reference."""
    visual = (c["image"] // c["patch"]) ** 2
    ids = prompt_ids(tok, prompt, visual)
    feats = model.image_features(pixels(img_uint8[None], device))
    return greedy_from_ids(model, ids, feats, tok.convert_tokens_to_ids("<image>"), tok.eos_token_id, c, max_new)


# ---------------------------------------------------------------- export

def export(model, tok, c, out):
    sd = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.state_dict().items()}
    save_sharded(sd, out)
    image_id = tok.convert_tokens_to_ids("<image>")
    cfg = {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "image_token_index": image_id,
        "pad_token_id": tok.pad_token_id, "projector_hidden_act": "gelu", "tie_word_embeddings": False,
        "torch_dtype": "float16", "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": c["v_dim"],
                          "intermediate_size": c["v_mlp"], "num_hidden_layers": c["v_layers"],
                          "num_attention_heads": c["v_heads"], "image_size": c["image"], "patch_size": c["patch"],
                          "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": c["v_dim"]},
        "text_config": {"model_type": "llama", "vocab_size": c["vocab"], "hidden_size": c["t_dim"],
                        "intermediate_size": c["t_mlp"], "num_hidden_layers": c["t_layers"],
                        "num_attention_heads": c["t_heads"], "num_key_value_heads": c["t_kv"],
                        "max_position_embeddings": c["max_pos"], "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                        "tie_word_embeddings": False, "bos_token_id": tok.bos_token_id,
                        "eos_token_id": tok.eos_token_id, "torch_dtype": "float16"},
    }
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
              open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    json.dump({"crop_size": {"height": c["image"], "width": c["image"]}, "do_center_crop": True,
               "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
               "image_mean": MEAN.tolist(), "image_processor_type": "CLIPImageProcessor", "image_std": STD.tolist(),
               "processor_class": "LlavaProcessor", "resample": 3, "rescale_factor": 1 / 255,
               "size": {"shortest_edge": c["image"]}},
              open(os.path.join(out, "preprocessor_config.json"), "w"), indent=2)


# ---------------------------------------------------------------- evaluation

def evaluate(model, tok, imgs, scenes, c, device, limit):
    """Held-out quality from greedy decoding (docs/shapescenes.md metrics)."""
    cap_tp = cap_fp = cap_fn = 0
    chair_s = chair_i_num = chair_i_den = 0
    yes = {}
    count_ok = count_n = 0
    for i in range(limit):
        s = scenes[i]
        _, out, _ = greedy(model, tok, imgs[i], ss.CAPTION_PROMPT, device, c)
        text = tok.decode(out, skip_special_tokens=True)
        said = ss.parse_caption(text)
        truth = [(o["size"], o["colour"], o["shape"], o["position"]) for o in s["objects"]]
        tp = sum(min(said.count(t), truth.count(t)) for t in set(truth))
        cap_tp, cap_fp, cap_fn = cap_tp + tp, cap_fp + len(said) - tp, cap_fn + len(truth) - tp
        present = {(o["colour"], o["shape"]) for o in s["objects"]}
        hallucinated = [m for m in said if (m[1], m[2]) not in present]
        chair_s += bool(hallucinated)
        chair_i_num, chair_i_den = chair_i_num + len(hallucinated), chair_i_den + len(said)
        for q in ss.questions(s, ss.Rand(ss.scene_seed("heldout", i) + 7919)):
            _, out, _ = greedy(model, tok, imgs[i], q["prompt"], device, c, 8)
            ans = tok.decode(out, skip_special_tokens=True).strip().lower()
            if q["type"] == "exist":
                key = q["negative"] or "positive"
                yes.setdefault(key, []).append(ans == q["answer"])
            else:
                count_ok, count_n = count_ok + (ans == q["answer"]), count_n + 1
    p = cap_tp / max(1, cap_tp + cap_fp)
    r = cap_tp / max(1, cap_tp + cap_fn)
    res = {"scenes": limit, "caption_precision": p, "caption_recall": r, "caption_f1": 2 * p * r / max(1e-9, p + r),
           "chair_s": chair_s / max(1, limit), "chair_i": chair_i_num / max(1, chair_i_den),
           "count_accuracy": count_ok / max(1, count_n)}
    for k, v in yes.items():
        res[f"yesno_accuracy_{k}"] = float(np.mean(v))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--train-scenes", type=int, default=40000)
    ap.add_argument("--vision-steps", type=int, default=1500)
    ap.add_argument("--decoder-steps", type=int, default=4000)
    ap.add_argument("--eval-scenes", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--init", default="", help="continue from an exported folder (its tower stays as it is)")
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    if args.quick:
        args.train_scenes, args.vision_steps, args.decoder_steps, args.eval_scenes = 600, 4, 4, 3
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    c = dict(image=224, patch=16, v_dim=192, v_layers=6, v_heads=3, v_mlp=768,
             t_dim=256, t_layers=6, t_heads=4, t_kv=4, t_mlp=688, max_pos=512)
    if args.quick:
        c.update(v_dim=48, v_layers=3, v_mlp=96, t_dim=64, t_layers=2, t_mlp=96)
    model_dir = os.path.join(args.out, "shapescenes-llava")
    os.makedirs(model_dir, exist_ok=True)

    t0 = time.time()
    imgs, scenes = render_many("train", args.train_scenes, args.workers)
    print(f"rendered {len(scenes)} training scenes in {time.time() - t0:.0f}s", flush=True)
    if args.init:
        from safetensors.torch import load_file
        from transformers import PreTrainedTokenizerFast
        tok = PreTrainedTokenizerFast.from_pretrained(args.init)
        tok.save_pretrained(model_dir)
        c["vocab"] = len(tok)
        model = Llava(c).to(device)
        sd = {}
        for f in sorted(os.listdir(args.init)):
            if f.endswith(".safetensors"):
                sd.update(load_file(os.path.join(args.init, f)))
        model.load_state_dict({k: v.float() for k, v in sd.items()})
        heads = None
    else:
        corpus = []
        rng = np.random.default_rng(1)
        for s in scenes[:5000]:
            corpus += [f"{p} {a}" for p, a in examples_for(s, rng, ("caption", "exist", "count"))]
        corpus.append(PROMPT.format(ss.CAPTION_PROMPT))
        tok = train_tokenizer(model_dir, corpus)
        c["vocab"] = len(tok)
        model = Llava(c).to(device)
        heads = train_vision(model, imgs, scenes, c, device, args.vision_steps, 256 if not args.quick else 8)
    model.vision_tower.requires_grad_(False)
    h_imgs, h_scenes = render_many("heldout", max(args.eval_scenes, 50 if not args.quick else 3), args.workers)
    vacc = vision_accuracy(model, heads, h_imgs, h_scenes, c, device) if heads else "from --init"
    print("vision tower held-out", vacc, flush=True)
    train_decoder(model, tok, imgs, scenes, c, device, args.decoder_steps, 128 if not args.quick else 4, seed=2,
                  lr=args.lr)
    export(model, tok, c, model_dir)

    # Reload the exported f16 weights in f32: what Tessera and transformers run.
    from safetensors.torch import load_file
    sd = {}
    for f in sorted(os.listdir(model_dir)):
        if f.endswith(".safetensors"):
            sd.update(load_file(os.path.join(model_dir, f)))
    model = Llava(c).to(device).float()
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    model.eval()

    ref = []
    rng = np.random.default_rng(99)
    for i in range(50 if not args.quick else 3):
        pairs = examples_for(h_scenes[i], rng, ("caption", "exist", "count"))
        prompt = ss.CAPTION_PROMPT if i % 2 == 0 else pairs[1 + int(rng.integers(len(pairs) - 1))][0]
        ids, out, margins = greedy(model, tok, h_imgs[i], prompt, device, c)
        ref.append({"image": f"heldout-{i:06d}.png", "index": i, "prompt": prompt, "input_ids": ids, "tokens": out,
                    "text": tok.decode(out, skip_special_tokens=True), "min_margin": min(margins)})
    record = {"config": c, "vision_tower_heldout": vacc, "parity": ref}

    def save():
        record["seconds"] = time.time() - t0
        json.dump(record, open(os.path.join(args.out, "shapescenes-reference.json"), "w"), indent=1)

    save()  # the model and its parity reference are safe before the long evaluation
    # transformers itself on the exported folder, for a few scenes.
    try:
        from transformers import LlavaForConditionalGeneration
        hf = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        agree = 0
        for r in ref[:10]:
            px = pixels(h_imgs[r["index"]][None], device)
            out = hf.generate(input_ids=torch.tensor([r["input_ids"]], device=device), pixel_values=px,
                              max_new_tokens=64, do_sample=False)
            agree += out[0, len(r["input_ids"]):].tolist() == r["tokens"]
        record["transformers_agrees_on"] = f"{agree}/10"
    except Exception as e:  # noqa: BLE001
        record["transformers_check_error"] = repr(e)
    save()
    print("transformers agreement", record.get("transformers_agrees_on", record.get("transformers_check_error")),
          flush=True)
    record["heldout_quality"] = evaluate(model, tok, h_imgs, h_scenes, c, device, args.eval_scenes)
    save()
    print("held-out quality", record["heldout_quality"], "done in %.0fs" % (time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
