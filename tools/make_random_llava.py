#!/usr/bin/env python3
"""Writes a LLaVA model folder with random weights for a real config (e.g.
tools/configs/llava-1.5-7b-hf, the shapes of llava-hf/llava-1.5-7b-hf),
in the transformers 4.x hub layout: sharded safetensors + index, the
config files, and a small SentencePiece tokenizer whose added tokens sit at
the config's ids (<image> = image_token_index, <pad> = pad_token_id).

Only numpy is needed (Debian python3-numpy). Values come from one random
pool (normal, std 0.02; norm weights 1) sliced at varying offsets, so a 7B
folder is written at disk speed. For latency and memory measurements only:
the output means nothing. Never commit the output.

  /usr/bin/python3 tools/make_random_llava.py --config tools/configs/llava-1.5-7b-hf \\
      --tokenizer-from tests/fixtures/llava/tiny-llava-mha --out /tmp/llava-7b-random
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

DTYPES = {"bf16": ("BF16", 2), "f16": ("F16", 2), "f32": ("F32", 4)}


def tensor_list(cfg):
    v = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, image_size=224, patch_size=32)
    v.update(cfg.get("vision_config", {}))
    t = dict(vocab_size=cfg.get("vocab_size", 32000), hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
             num_attention_heads=32)
    t.update(cfg.get("text_config", {}))
    t.setdefault("num_key_value_heads", t["num_attention_heads"])
    head_dim = t.get("head_dim", t["hidden_size"] // t["num_attention_heads"])
    c, vi, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    n = (v["image_size"] // p) ** 2 + 1
    out = []
    vp = "vision_tower.vision_model."
    out += [(vp + "embeddings.class_embedding", [c]), (vp + "embeddings.patch_embedding.weight", [c, 3, p, p]),
            (vp + "embeddings.position_embedding.weight", [n, c]), (vp + "pre_layrnorm.weight", [c]),
            (vp + "pre_layrnorm.bias", [c])]
    for l in range(v["num_hidden_layers"]):
        b = f"{vp}encoder.layers.{l}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += [(b + f"self_attn.{proj}.weight", [c, c]), (b + f"self_attn.{proj}.bias", [c])]
        out += [(b + "layer_norm1.weight", [c]), (b + "layer_norm1.bias", [c]), (b + "mlp.fc1.weight", [vi, c]),
                (b + "mlp.fc1.bias", [vi]), (b + "mlp.fc2.weight", [c, vi]), (b + "mlp.fc2.bias", [c]),
                (b + "layer_norm2.weight", [c]), (b + "layer_norm2.bias", [c])]
    out += [(vp + "post_layernorm.weight", [c]), (vp + "post_layernorm.bias", [c])]
    d, inter, q, kv = t["hidden_size"], t["intermediate_size"], t["num_attention_heads"] * head_dim, \
        t["num_key_value_heads"] * head_dim
    out += [("multi_modal_projector.linear_1.weight", [d, c]), ("multi_modal_projector.linear_1.bias", [d]),
            ("multi_modal_projector.linear_2.weight", [d, d]), ("multi_modal_projector.linear_2.bias", [d])]
    tp = "language_model.model."
    out += [(tp + "embed_tokens.weight", [t["vocab_size"], d])]
    for l in range(t["num_hidden_layers"]):
        b = f"{tp}layers.{l}."
        out += [(b + "input_layernorm.weight", [d]), (b + "self_attn.q_proj.weight", [q, d]),
                (b + "self_attn.k_proj.weight", [kv, d]), (b + "self_attn.v_proj.weight", [kv, d]),
                (b + "self_attn.o_proj.weight", [d, q]), (b + "post_attention_layernorm.weight", [d]),
                (b + "mlp.gate_proj.weight", [inter, d]), (b + "mlp.up_proj.weight", [inter, d]),
                (b + "mlp.down_proj.weight", [d, inter])]
    out += [(tp + "norm.weight", [d]), ("language_model.lm_head.weight", [t["vocab_size"], d])]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="folder with config.json (+ preprocessor/generation configs)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer-from", required=True, help="folder with a tokenizer.model to reuse")
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--shard-gb", type=float, default=5.0)
    args = ap.parse_args()

    cfg = json.load(open(os.path.join(args.config, "config.json")))
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.config):
        shutil.copy(os.path.join(args.config, f), os.path.join(args.out, f))
    shutil.copy(os.path.join(args.tokenizer_from, "tokenizer.model"), os.path.join(args.out, "tokenizer.model"))
    image_id, pad_id = cfg.get("image_token_index", 32000), cfg.get("pad_token_id", 32001)
    json.dump({"<image>": image_id, "<pad>": pad_id}, open(os.path.join(args.out, "added_tokens.json"), "w"))
    special = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": True} for i, s in ((0, "<unk>"), (1, "<s>"), (2, "</s>"), (image_id, "<image>"),
                                                      (pad_id, "<pad>"))}
    json.dump({"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": special, "bos_token": "<s>",
               "eos_token": "</s>", "legacy": False, "pad_token": "<pad>", "unk_token": "<unk>",
               "tokenizer_class": "LlamaTokenizer"}, open(os.path.join(args.out, "tokenizer_config.json"), "w"))

    st_dtype, size = DTYPES[args.dtype]
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal(1 << 24, dtype=np.float32) * 0.02)
    if args.dtype == "bf16":
        pool = (pool.view(np.uint32) >> 16).astype(np.uint16)
        one = np.uint16(0x3F80)
    elif args.dtype == "f16":
        pool = pool.astype(np.float16)
        one = np.float16(1.0)
    else:
        one = np.float32(1.0)

    tensors = tensor_list(cfg)
    limit = int(args.shard_gb * (1 << 30))
    shards, current, current_bytes = [], [], 0
    for name, shape in tensors:
        nbytes = int(np.prod(shape)) * size
        if current and current_bytes + nbytes > limit:
            shards.append(current)
            current, current_bytes = [], 0
        current.append((name, shape))
        current_bytes += nbytes
    shards.append(current)

    weight_map, total, offset_seed = {}, 0, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, at = {"__metadata__": {"format": "pt"}}, 0
        for name, shape in shard:
            nbytes = int(np.prod(shape)) * size
            header[name] = {"dtype": st_dtype, "shape": shape, "data_offsets": [at, at + nbytes]}
            at += nbytes
            weight_map[name] = fname
        total += at
        hb = json.dumps(header).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)
        with open(os.path.join(args.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for name, shape in shard:
                n = int(np.prod(shape))
                if len(shape) == 1 and ("norm" in name or "layrnorm" in name) and name.endswith("weight"):
                    f.write(np.full(n, one).tobytes())
                    continue
                while n > 0:
                    offset_seed = (offset_seed * 1103515245 + 12345) % (1 << 31)
                    start = offset_seed % (len(pool) // 2)
                    m = min(n, len(pool) - start)
                    f.write(pool[start:start + m].tobytes())
                    n -= m
        print(fname, f"{at / 2**30:.2f} GiB", flush=True)
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(args.out, "model.safetensors.index.json"), "w"), indent=2)
    print(f"{len(tensors)} tensors, {total / 2**30:.2f} GiB in {len(shards)} shards -> {args.out}")


if __name__ == "__main__":
    main()
