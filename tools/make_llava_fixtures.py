#!/usr/bin/env python3
"""Builds small random-weight LLaVA models with Hugging Face transformers and
records what transformers computes on them, as test fixtures for Tessera.

Two differently shaped models cover both folder layouts found on the hub:
  tiny-llava-gqa   transformers 5.x layout as save_pretrained writes it:
                   processor_config.json with the image processor nested,
                   rope_parameters (linear scaling), image_token_id,
                   byte-level BPE tokenizer.json (LLaMA-3 style split regex),
                   grouped-query attention, vision_feature_layer -2 / default,
                   f32 weights in two shards.
  tiny-llava-mha   transformers 4.x layout (old weight names
                   language_model.model.*, preprocessor_config.json,
                   rope_theta, image_token_index), SentencePiece
                   tokenizer.model only (legacy=false), no GQA, attention
                   bias, vision_feature_layer -1 / full, bf16 weights.
Both folders are reloaded with from_pretrained before any reference is
recorded, so transformers itself vouches for them.

References (reference/ beside each model):
  reference.safetensors  pixel values of each test image, vision hidden
                         states (all layers), CLS attention rows, projected
                         image features, decoder hidden states (prefill),
                         first-step logits, greedy logits margins
  reference.json         prompt, input ids, 20 greedy tokens and text,
                         tokenizer cases [{text, ids, ids_no_special, decoded}]

Run on a machine with torch + transformers (5.x) + tokenizers +
sentencepiece; CPU is enough (the models are tiny):
  python tools/make_llava_fixtures.py --out tests/fixtures/llava
"""
import argparse
import inspect
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_folder import save_sharded  # noqa: E402

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

TRICKY_STRINGS = [
    "Hello world", " leading space", "trailing space ", "double  space", "  two leading",
    "tab\tseparated", "line\nbreak", "\n", "   ", "", "café naïve résumé", "日本語のテキスト",
    "emoji 🙂 and 🚀", "numbers 12345 and 3.14159", "2024-11-29", "<image>",
    "USER: <image>\nDescribe the image. ASSISTANT:", "a<image>b", " <image> ", "<image><image>",
    "UPPER lower MiXeD", "don't won't it's THEY'RE", "punctuation!?... (brackets) [x] {y}",
    "ünïcödé ẞ Ω ≈ ∑", "a\u00a0b", "x" * 40, "red circle, blue square; 3 green triangles.",
]

WORDS = ("a the red green blue yellow purple orange white black small large circle square triangle star "
         "cross ring heart diamond top bottom left right middle of in on and with there is are one two three "
         "four five image picture shows describe what shape colour count how many yes no").split()


def corpus(seed, n=3000):
    rng = np.random.default_rng(seed)
    extra = ["café", "naïve", "résumé", "日本語", "テキスト", "ünïcödé", "Ω", "≈", "12345", "3.14159", "2024-11-29",
             "USER:", "ASSISTANT:", "don't", "it's", "(brackets)", "[x]", "{y}", "!?...", "\t", "\n"]
    lines = []
    for _ in range(n):
        k = int(rng.integers(3, 14))
        words = [WORDS[int(rng.integers(len(WORDS)))] if rng.random() > 0.12 else extra[int(rng.integers(len(extra)))]
                 for _ in range(k)]
        s = " ".join(words)
        if rng.random() < 0.3:
            s = s.capitalize() + "."
        lines.append(s)
    return lines


def make_images(out):
    """Two procedurally drawn test images (ours, committed with the fixtures)."""
    rng = np.random.default_rng(11)
    paths = []
    for name, (h, w) in (("scene-143x97.jpg", (97, 143)), ("scene-80x64.png", (64, 80))):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        img = np.stack([xx * 255 / w, yy * 255 / h, ((xx + yy) % 32) * 8], -1)
        for _ in range(5):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 18)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            img[mask] = rng.uniform(0, 255, size=3)
        img += rng.normal(0, 6, size=img.shape)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        path = os.path.join(out, name)
        if name.endswith(".jpg"):
            pil.save(path, quality=88)
        else:
            pil.save(path)
        paths.append(path)
    return paths


def bpe_tokenizer(seed):
    """LLaMA-3 style byte-level BPE trained on the spot."""
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = BpeTrainer(vocab_size=700, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                         show_progress=False)
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    fast.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    return fast


def sentencepiece_tokenizer(seed, work):
    """LLaMA-2 style SentencePiece BPE with byte fallback, trained on the spot."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    prefix = os.path.join(work, "sp")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus(seed)), model_prefix=prefix, vocab_size=600, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, add_dummy_prefix=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1)
    # from_pretrained on a folder holding only tokenizer.model: what a 4.x
    # hub folder gives transformers (the constructor alone ignores the file).
    sp_dir = os.path.join(work, "sp-folder")
    os.makedirs(sp_dir, exist_ok=True)
    shutil.copy(prefix + ".model", os.path.join(sp_dir, "tokenizer.model"))
    tok = LlamaTokenizer.from_pretrained(sp_dir, legacy=False)
    tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    assert len(tok) == 602, len(tok)
    return tok, prefix + ".model"


def tokenizer_config_4x(folder, tok):
    """tokenizer_config.json, special_tokens_map.json and added_tokens.json as
    a 4.x slow LlamaTokenizer wrote them."""
    def entry(t):
        return {"content": str(t), "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                "special": True}
    decoder = {str(i): entry(t) for i, t in sorted(tok.added_tokens_decoder.items())}
    cfg = {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder, "bos_token": "<s>",
           "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": False, "model_max_length": 512,
           "pad_token": "<pad>", "padding_side": "left", "processor_class": "LlavaProcessor", "sp_model_kwargs": {},
           "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>", "use_default_system_prompt": False}
    json.dump(cfg, open(os.path.join(folder, "tokenizer_config.json"), "w"), indent=2)
    json.dump({"additional_special_tokens": ["<image>"], "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
               "unk_token": "<unk>"}, open(os.path.join(folder, "special_tokens_map.json"), "w"), indent=2)
    added = {str(t): i for i, t in tok.added_tokens_decoder.items() if i >= tok.vocab_size}
    json.dump(added, open(os.path.join(folder, "added_tokens.json"), "w"), indent=2)


def pil_image_processor(shortest_edge, crop):
    import transformers.models.clip.image_processing_pil_clip as m
    cls = next(getattr(m, n) for n in dir(m) if n.startswith("CLIPImageProcessor"))
    return cls(size={"shortest_edge": shortest_edge}, crop_size={"height": crop, "width": crop}, do_center_crop=True,
               resample=3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=OPENAI_CLIP_MEAN,
               image_std=OPENAI_CLIP_STD, do_convert_rgb=True)


def randomize(model, seed):
    """Random weights large enough that logits are well separated (greedy
    decoding then has clear winners, so parity is not decided by noise)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight") and ("norm" in name or "layrnorm" in name):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name or "class_embedding" in name or "position_embedding" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                gain = 2.0 if "lm_head" in name else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def llava_config(spec, vocab, image_token, pad_id, bos_id, eos_id):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    vc = CLIPVisionConfig(hidden_size=spec["v_dim"], intermediate_size=spec["v_mlp"], num_hidden_layers=spec["v_layers"],
                          num_attention_heads=spec["v_heads"], image_size=spec["image"], patch_size=spec["patch"],
                          projection_dim=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    rope = {"rope_type": spec["rope_type"], "rope_theta": spec["rope_theta"]}
    if spec["rope_type"] == "linear":
        rope["factor"] = 2.0
    tc = LlamaConfig(vocab_size=vocab, hidden_size=spec["t_dim"], intermediate_size=spec["t_mlp"],
                     num_hidden_layers=spec["t_layers"], num_attention_heads=spec["t_heads"],
                     num_key_value_heads=spec["t_kv"], max_position_embeddings=512, rms_norm_eps=1e-5,
                     rope_parameters=rope, attention_bias=spec["attention_bias"], tie_word_embeddings=False,
                     bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    kw = dict(vision_config=vc, text_config=tc, projector_hidden_act="gelu",
              vision_feature_layer=spec["feature_layer"], vision_feature_select_strategy=spec["strategy"],
              tie_word_embeddings=False)
    params = inspect.signature(LlavaConfig.__init__).parameters
    kw["image_token_id" if "image_token_id" in params else "image_token_index"] = image_token
    return LlavaConfig(**kw)


def to_4x_layout(folder, shortest_edge, crop, patch, strategy):
    """Rewrites a folder saved by transformers 5.x into what 4.x wrote:
    old weight names, two shards + index, flat preprocessor_config.json,
    rope_theta / rope_scaling and image_token_index in config.json."""
    cfg = json.load(open(os.path.join(folder, "config.json")))
    tc = cfg["text_config"]
    rope = tc.pop("rope_parameters", None) or {"rope_type": "default", "rope_theta": 10000.0}
    tc["rope_theta"] = rope["rope_theta"]
    tc["rope_scaling"] = None if rope["rope_type"] == "default" else {
        "type": rope["rope_type"], **{k: v for k, v in rope.items() if k not in ("rope_type", "rope_theta")}}
    if "image_token_id" in cfg:
        cfg["image_token_index"] = cfg.pop("image_token_id")
    for c in (cfg, tc, cfg["vision_config"]):
        if "dtype" in c:
            c["torch_dtype"] = c.pop("dtype")
    cfg["transformers_version"] = "4.46.0"
    json.dump(cfg, open(os.path.join(folder, "config.json"), "w"), indent=2)

    tensors = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(folder, f)))
            os.remove(os.path.join(folder, f))
    if os.path.exists(os.path.join(folder, "model.safetensors.index.json")):
        os.remove(os.path.join(folder, "model.safetensors.index.json"))
    # transformers 5.x may save either its own module names or (reverting its
    # conversion mapping) 4.x-like ones without CLIP's vision_model level.
    renames = [("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
               ("model.vision_tower.vision_model.", "vision_tower.vision_model."),
               ("model.vision_tower.", "vision_tower.vision_model."),
               ("vision_tower.vision_model.", "vision_tower.vision_model."),
               ("vision_tower.", "vision_tower.vision_model."),
               ("model.multi_modal_projector.", "multi_modal_projector.")]
    old = {}
    for k, v in tensors.items():
        for a, b in renames:
            if k.startswith(a):
                k = b + k[len(a):]
                break
        old[k] = v.contiguous()
    save_sharded(old, folder)

    for f in ("processor_config.json", "chat_template.jinja", "chat_template.json"):
        if os.path.exists(os.path.join(folder, f)):
            os.remove(os.path.join(folder, f))
    json.dump({"crop_size": {"height": crop, "width": crop}, "do_center_crop": True, "do_convert_rgb": True,
               "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": OPENAI_CLIP_MEAN,
               "image_processor_type": "CLIPImageProcessor", "image_std": OPENAI_CLIP_STD,
               "processor_class": "LlavaProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
               "size": {"shortest_edge": shortest_edge}},
              open(os.path.join(folder, "preprocessor_config.json"), "w"), indent=2)
    json.dump({"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": patch,
               "processor_class": "LlavaProcessor", "vision_feature_select_strategy": strategy},
              open(os.path.join(folder, "processor_config.json"), "w"), indent=2)


def build(spec, out, images, work):
    from transformers import AutoTokenizer, LlavaForConditionalGeneration, LlavaProcessor

    folder = os.path.join(out, spec["name"])
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    if spec["tokenizer"] == "bpe":
        tok = bpe_tokenizer(spec["seed"])
        sp_path = None
    else:
        tok, sp_path = sentencepiece_tokenizer(spec["seed"], work)
    image_token = tok.convert_tokens_to_ids("<image>")
    config = llava_config(spec, len(tok), image_token, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    torch.manual_seed(spec["seed"])
    model = LlavaForConditionalGeneration(config)
    randomize(model, spec["seed"])
    if spec["dtype"] == "bf16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(folder, max_shard_size=spec.get("shard", "10GB"))

    ip = pil_image_processor(spec["shortest_edge"], spec["image"])
    processor = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=spec["patch"],
                               vision_feature_select_strategy=spec["strategy"], num_additional_image_tokens=1,
                               image_token="<image>")
    processor.save_pretrained(folder)
    if spec["layout"] == "4.x":
        for f in ("tokenizer.json",):
            if os.path.exists(os.path.join(folder, f)):
                os.remove(os.path.join(folder, f))
        shutil.copy(sp_path, os.path.join(folder, "tokenizer.model"))
        tokenizer_config_4x(folder, tok)
        to_4x_layout(folder, spec["shortest_edge"], spec["image"], spec["patch"], spec["strategy"])

    # Everything below uses only what is in the folder.
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ip = pil_image_processor(spec["shortest_edge"], spec["image"])
    processor = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=spec["patch"],
                               vision_feature_select_strategy=spec["strategy"], num_additional_image_tokens=1,
                               image_token="<image>")
    ref_dir = os.path.join(folder, "reference")
    os.makedirs(ref_dir)
    tensors, meta = {}, {"model": spec, "tokenizer_class": type(tok).__name__, "files": sorted(os.listdir(folder))}

    for i, path in enumerate(images):
        pv = ip(images=Image.open(path), return_tensors="pt")["pixel_values"]
        tensors[f"pixel_values.{os.path.basename(path)}"] = pv[0].contiguous()
    try:  # the default (torchvision) processor, for the record only
        from transformers import AutoImageProcessor
        fast = AutoImageProcessor.from_pretrained(folder)
        pv_fast = fast(images=Image.open(images[spec["image_index"]]), return_tensors="pt")["pixel_values"]
        pv_pil = tensors[f"pixel_values.{os.path.basename(images[spec['image_index']])}"]
        meta["default_image_processor"] = type(fast).__name__
        meta["default_vs_pil_pixel_max_diff"] = float((pv_fast[0] - pv_pil).abs().max())
    except Exception as e:  # noqa: BLE001
        meta["default_image_processor_error"] = repr(e)

    image = Image.open(images[spec["image_index"]])
    prompt = spec["prompt"]
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    input_ids = inputs["input_ids"]
    meta["image"] = os.path.basename(images[spec["image_index"]])
    meta["prompt"] = prompt
    meta["input_ids"] = input_ids[0].tolist()

    with torch.no_grad():
        pv = inputs["pixel_values"]
        vt = model.model.vision_tower(pv, output_hidden_states=True, output_attentions=True)
        for l, h in enumerate(vt.hidden_states):
            tensors[f"vision.hidden.{l}"] = h[0].contiguous()
        for l, a in enumerate(vt.attentions):
            tensors[f"vision.cls_attention.{l}"] = a[0, :, 0, :].contiguous()
        out = model(input_ids=input_ids, pixel_values=pv, attention_mask=inputs["attention_mask"],
                    output_hidden_states=True, use_cache=True)
        tensors["image_features"] = out.image_hidden_states.reshape(-1, out.image_hidden_states.shape[-1]).contiguous()
        for l, h in enumerate(out.hidden_states):
            tensors[f"decoder.hidden.{l}"] = h[0].contiguous()
        tensors["logits.first"] = out.logits[0, -1].clone()
        tensors["logits.prompt"] = out.logits[0].clone()

        past, logits, tokens, margins = out.past_key_values, out.logits[0, -1], [], []
        for _ in range(20):
            top = torch.topk(logits, 2)
            margins.append(float(top.values[0] - top.values[1]))
            nxt = int(top.indices[0])
            tokens.append(nxt)
            step = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past, logits = step.past_key_values, step.logits[0, -1]
        tensors["greedy.margins"] = torch.tensor(margins)
        meta["greedy_tokens"] = tokens
        meta["greedy_text"] = tok.decode(tokens, skip_special_tokens=True)
        meta["greedy_min_margin"] = min(margins)
        gen = model.generate(**inputs, max_new_tokens=20, do_sample=False)
        meta["generate_tokens"] = gen[0, input_ids.shape[1]:].tolist()

    cases = []
    for text in TRICKY_STRINGS:
        ids = tok(text)["input_ids"]
        cases.append({"text": text, "ids": ids, "ids_no_special": tok(text, add_special_tokens=False)["input_ids"],
                      "decoded": tok.decode(ids, skip_special_tokens=True)})
    meta["tokenizer_cases"] = cases
    if sp_path:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=sp_path)
        meta["sentencepiece_raw"] = [{"text": t, "ids": sp.encode(t)} for t in TRICKY_STRINGS]
    meta["config_as_loaded"] = model.config.to_dict()
    tensors = {k: v.detach().float().clone().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(ref_dir, "reference.safetensors"))
    json.dump(meta, open(os.path.join(ref_dir, "reference.json"), "w"), indent=1, ensure_ascii=False, default=str)
    print(spec["name"], "ok; files", meta["files"], "prompt tokens", len(meta["input_ids"]), "greedy",
          meta["greedy_tokens"], "min margin %.3f" % meta["greedy_min_margin"], "generate agrees",
          meta["generate_tokens"] == tokens[:len(meta["generate_tokens"])], meta.get("default_vs_pil_pixel_max_diff"))


SPECS = [
    dict(name="tiny-llava-gqa", layout="5.x", tokenizer="bpe", dtype="f32", seed=1, shard="700KB",
         v_dim=64, v_mlp=128, v_layers=4, v_heads=4, image=56, patch=14, shortest_edge=56,
         t_dim=64, t_mlp=160, t_layers=3, t_heads=4, t_kv=2, rope_type="linear", rope_theta=500000.0,
         attention_bias=False, feature_layer=-2, strategy="default", image_index=0,
         prompt="USER: <image>\nDescribe the image. ASSISTANT:"),
    dict(name="tiny-llava-mha", layout="4.x", tokenizer="sentencepiece", dtype="bf16", seed=2,
         v_dim=48, v_mlp=96, v_layers=3, v_heads=3, image=48, patch=8, shortest_edge=50,
         t_dim=96, t_mlp=192, t_layers=2, t_heads=3, t_kv=3, rope_type="default", rope_theta=10000.0,
         attention_bias=True, feature_layer=-1, strategy="full", image_index=1,
         prompt="USER: <image>\nWhat shape is in the picture? ASSISTANT:"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(4)
    work = os.path.join(args.out, ".work")
    os.makedirs(work, exist_ok=True)
    images = make_images(args.out)
    for spec in SPECS:
        build(spec, args.out, images, work)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
