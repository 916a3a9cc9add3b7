#!/usr/bin/env python3
"""Trains the DyVTE visual-exit router for a LLaVA folder with the paper's
recipe (METHODS.md section 3), backbone frozen, and stores it beside the
model as dyvte_router.safetensors + dyvte_router.json.

Per example (training split of ShapeScenes, never the held-out one): the
model's own greedy answer with full attention is the target; an exit layer l
is drawn uniformly; the answer is scored again with the visual tokens removed
from every layer after l (their keys masked; text keeps its positions). Label
1 ("exit is safe") iff greedy next-token agreement on the answer > 0.99 and
mean cross-entropy < 1.03x the full model's. The router reads
f = [mean of the text states after the image (last prompt token excluded),
state of the last prompt token] after layer l, and is W2 GELU(W1 f), 2C ->
2048 -> 2, no biases, Xavier-uniform, AdamW lr 6e-5 cosine with 3% warmup,
one epoch.

Runs on CPU with Debian's python3-torch (the demo model is small):
  /usr/bin/python3 tools/train_dyvte.py --model models/shapescenes-llava --tessera build/tessera
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapescenes as ss  # noqa: E402
import train_shapescenes as ts  # noqa: E402


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    types = {"F16": np.float16, "F32": np.float32, "BF16": None}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = data[a:b]
        if t["dtype"] == "BF16":
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, types[t["dtype"]]).astype(np.float32)
        out[name] = torch.from_numpy(arr.reshape(t["shape"]).copy())
    return out


def load_model(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    v, t = cfg["vision_config"], cfg["text_config"]
    c = dict(image=v["image_size"], patch=v["patch_size"], v_dim=v["hidden_size"], v_layers=v["num_hidden_layers"],
             v_heads=v["num_attention_heads"], v_mlp=v["intermediate_size"], t_dim=t["hidden_size"],
             t_layers=t["num_hidden_layers"], t_heads=t["num_attention_heads"], t_kv=t["num_key_value_heads"],
             t_mlp=t["intermediate_size"], max_pos=t["max_position_embeddings"], vocab=t["vocab_size"])
    model = ts.Llava(c)
    sd = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors") and f.startswith("model"):
            sd.update(load_safetensors(os.path.join(folder, f)))
    model.load_state_dict(sd)
    model.eval()
    return model, c, cfg


def forward_layers(model, x, positions, masks):
    """Decoder forward with a mask per layer; returns logits and the hidden
    states after each layer."""
    lm = model.language_model.model
    cos, sin = model.rope(positions, x.dtype)
    states = []
    for layer, mask in zip(lm.layers, masks):
        x = layer(x, cos, sin, mask)
        states.append(x)
    return model.language_model.lm_head(lm.norm(x)), states


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/shapescenes-llava")
    ap.add_argument("--tessera", default="build/tessera", help="for the prompt token ids (the engine's tokenizer)")
    ap.add_argument("--examples", type=int, default=2400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, c, cfg = load_model(args.model)
    L, visual = c["t_layers"], (c["image"] // c["patch"]) ** 2
    image_id, eos = cfg["image_token_index"], cfg["text_config"]["eos_token_id"]

    # Prompt ids from the engine's tokenizer (every distinct prompt once).
    prompts = [ss.CAPTION_PROMPT] + [ss.question_text({"type": "exist", "colour": col, "shape": sh})
                                     for col in ss.COLOUR_NAMES for sh in ss.SHAPES]
    prompts += [ss.question_text({"type": "count", "what": w}) for w in ["objects"] + ss.SHAPES]
    out = subprocess.run([args.tessera, "tokenize", "--model", args.model] + [ts.PROMPT.format(p) for p in prompts],
                         check=True, capture_output=True, text=True).stdout
    ids_of = {p: json.loads(line)["ids"] for p, line in zip(prompts, out.splitlines())}

    rng = np.random.default_rng(args.seed)
    feats, labels, layers = [], [], []
    t0 = time.time()
    with torch.no_grad():
        for e in range(args.examples):
            img, scene = ss.make_scene("train", 500_000 + e)
            pairs = ts.examples_for(scene, rng, ("caption", "exist", "count"))
            prompt = pairs[int(rng.integers(len(pairs)))][0]
            pids = []
            for i in ids_of[prompt]:
                pids.extend([image_id] * visual if i == image_id else [i])
            px = ts.pixels(np.array(img)[None], torch.device("cpu"))
            image_feats = model.image_features(px)
            # The model's own greedy answer with full attention.
            _, answer, _ = ts.greedy_from_ids(model, pids, image_feats, image_id, eos, c, 48)
            seq = pids + answer
            T, P = len(seq), len(pids)
            x = ts.embed(model, torch.tensor([seq]), image_feats, image_id)
            pos = torch.arange(T)[None]
            causal = ts.causal_mask(T, x.device, x.dtype)
            logits_full, states = forward_layers(model, x, pos, [causal] * L)
            exit_layer = int(rng.integers(L))
            no_visual = causal.clone()
            is_visual = torch.tensor([i == image_id for i in seq])
            no_visual[:, is_visual] = float("-inf")
            masks = [causal] * (exit_layer + 1) + [no_visual] * (L - exit_layer - 1)
            logits_exit, _ = forward_layers(model, x, pos, masks)
            span = slice(P - 1, T - 1)  # predictions of the answer tokens
            target = torch.tensor(answer)
            agree = (logits_exit[0, span].argmax(-1) == logits_full[0, span].argmax(-1)).float().mean().item()
            ce_full = F.cross_entropy(logits_full[0, span], target).item()
            ce_exit = F.cross_entropy(logits_exit[0, span], target).item()
            labels.append(int(agree > 0.99 and ce_exit < 1.03 * ce_full))
            last_image = max(i for i, t in enumerate(pids) if t == image_id)
            h = states[exit_layer][0]
            text_after = h[last_image + 1:P - 1]
            f = torch.cat([text_after.mean(0) if len(text_after) else torch.zeros_like(h[0]), h[P - 1]])
            feats.append(f)
            layers.append(exit_layer)
            if e % 200 == 0:
                print(f"example {e}: layer {exit_layer} agree {agree:.3f} ce {ce_exit:.3f}/{ce_full:.3f} "
                      f"-> {labels[-1]} ({time.time() - t0:.0f}s)", flush=True)
    X, Y = torch.stack(feats), torch.tensor(labels)
    n_val = len(Y) // 10
    Xtr, Ytr, Xva, Yva = X[n_val:], Y[n_val:], X[:n_val], Y[:n_val]

    d = X.shape[1]
    w1 = torch.empty(2048, d)
    w2 = torch.empty(2, 2048)
    torch.nn.init.xavier_uniform_(w1)
    torch.nn.init.xavier_uniform_(w2)
    w1.requires_grad_(True)
    w2.requires_grad_(True)
    opt = torch.optim.AdamW([w1, w2], lr=6e-5)
    batch = 16
    steps = math.ceil(len(Ytr) / batch)
    warm = max(1, int(0.03 * steps))
    order = torch.randperm(len(Ytr))
    for s in range(steps):
        lr = 6e-5 * (s + 1) / warm if s < warm else 6e-5 * 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = order[s * batch:(s + 1) * batch]
        logits = F.gelu(Xtr[idx] @ w1.T) @ w2.T
        loss = F.cross_entropy(logits, Ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = (F.gelu(Xva @ w1.T) @ w2.T).argmax(-1)
    stats = {
        "examples": len(Y), "validation": n_val, "safe_fraction": float(Y.float().mean()),
        "safe_fraction_by_layer": [float(Y[torch.tensor(layers) == l].float().mean()) for l in range(L)],
        "validation_accuracy": float((pred == Yva).float().mean()),
        "validation_majority_baseline": float(max(Yva.float().mean(), 1 - Yva.float().mean())),
        "recipe": "METHODS.md section 3: agreement > 0.99 and CE < 1.03x; W2 GELU(W1 f), 2C->2048->2, no biases, "
                  "Xavier-uniform, AdamW lr 6e-5 cosine, warmup 3%, one epoch, batch 16",
        "feature": "concat(mean of text states after the image excluding the last prompt token, last prompt token)",
        "seconds": time.time() - t0,
    }
    blob = {"w1": w1.detach().half().numpy(), "w2": w2.detach().half().numpy()}
    header, offset, chunks = {"__metadata__": {"format": "tessera-dyvte-router"}}, 0, []
    for name, arr in blob.items():
        b = arr.tobytes()
        header[name] = {"dtype": "F16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        chunks.append(b)
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(os.path.join(args.model, "dyvte_router.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(chunks))
    json.dump(stats, open(os.path.join(args.model, "dyvte_router.json"), "w"), indent=1)
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
