#include "models/llava.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/elementwise.h"
#include "kernels/onednn_linear.h"
#include "tessera/error.h"
#include "tessera/memory.h"

namespace tessera {

namespace {

// Tensor name prefixes differ between the hub's layouts: transformers 4.x
// checkpoints (vision_tower.vision_model.*, language_model.model.*,
// language_model.lm_head), 4.52+ saves (model.vision_tower.vision_model.*,
// model.language_model.*, lm_head) and 5.x saves (vision_tower.* without
// CLIP's vision_model level). Each part is found by probing one tensor.
struct LlavaNames {
    std::string vision, projector, text, head;
    std::string layout() const { return text == "model.language_model." ? "transformers-4.52+" : "transformers-4/5"; }
};

std::string probe(const SafeTensorsSet& set, std::initializer_list<const char*> prefixes, const std::string& tensor,
                  const std::string& what) {
    for (const char* p : prefixes)
        if (set.find(std::string(p) + tensor)) return p;
    std::string tried;
    for (const char* p : prefixes) tried += (tried.empty() ? "'" : ", '") + std::string(p) + tensor + "'";
    fail(set.where(), "no " + what + " weights (looked for " + tried + "): not a LLaVA checkpoint");
}

LlavaNames detect_names(const SafeTensorsSet& set) {
    LlavaNames n;
    n.vision = probe(set, {"model.vision_tower.vision_model.", "vision_tower.vision_model.", "model.vision_tower.",
                           "vision_tower."},
                     "embeddings.patch_embedding.weight", "vision tower");
    n.projector = probe(set, {"model.multi_modal_projector.", "multi_modal_projector."}, "linear_1.weight", "projector");
    n.text = probe(set, {"model.language_model.", "language_model.model.", "model.language_model.model."},
                   "embed_tokens.weight", "language model");
    n.head = set.find("lm_head.weight") ? "lm_head.weight" : "language_model.lm_head.weight";
    return n;
}

DType dtype_from_option(const std::string& option, const LlavaConfig& cfg, const SafeTensorsSet& set) {
    if (option == "f32") return DType::f32;
    if (option == "bf16") return DType::bf16;
    if (option == "f16") return DType::f16;
    if (option != "auto") fail("--dtype", "expected auto, f32, bf16 or f16, got '" + option + "'");
    // f32 copies when they take at most half of physical memory.
    uint64_t elements = 0;
    DType file = DType::f32;
    for (const auto& [name, e] : set.entries()) {
        elements += uint64_t(e.info->numel());
        if (e.info->dtype != DType::f32) file = e.info->dtype;
    }
    (void)cfg;
    if (file == DType::f32 || double(elements) * 4.0 <= 0.5 * double(memory_physical())) return DType::f32;
    return file;
}

// Bytes the loader will allocate: f32 copies of the vision tower, the
// projector and every vector; decoder matrices copied unless the file already
// holds them in the run's dtype (then they are used in place from the mapping).
uint64_t planned_copy_bytes(const SafeTensorsSet& set, const LlavaNames& names, DType decoder) {
    uint64_t bytes = 0;
    for (const auto& [name, e] : set.entries()) {
        const uint64_t n = uint64_t(e.info->numel());
        const bool decoder_matrix = e.info->shape.size() == 2 && name.rfind(names.vision, 0) != 0 &&
                                    name.rfind(names.projector, 0) != 0;
        if (!decoder_matrix || decoder == DType::f32) bytes += n * sizeof(float);
        else if (e.info->dtype != decoder) bytes += n * dtype_size(decoder);
    }
    return bytes;
}

void load_vision(LlavaModel& m, WeightLoader& w, const std::string& p) {
    const ClipVisionConfig& v = m.cfg.vision;
    VitModel& vit = m.vision;
    VitHparams& hp = vit.hp;
    hp.img_h = hp.img_w = v.image_size, hp.patch = v.patch;
    hp.dim = v.hidden, hp.depth = v.layers, hp.heads = v.heads, hp.mlp_hidden = v.intermediate;
    hp.qkv_bias = true, hp.class_token = true, hp.pre_norm = true;
    hp.norm_eps = v.layer_norm_eps, hp.num_classes = 0, hp.act = v.act;
    hp.block_attention.assign(size_t(v.layers), BlockAttention{});
    vit.dir = m.dir, vit.architecture = "clip_vision_model";

    const int64_t c = v.hidden, n = hp.tokens();
    vit.patch_w = w.packed({p + "embeddings.patch_embedding.weight"}, {{c, 3, v.patch, v.patch}},
                           3 * int64_t(v.patch) * v.patch);
    vit.patch_b = nullptr;  // CLIP's patch convolution has no bias
    vit.cls_token = w.f32(p + "embeddings.class_embedding", {c});
    vit.pos_embed = w.f32(p + "embeddings.position_embedding.weight", {n, c});
    vit.norm_pre_w = w.f32(p + "pre_layrnorm.weight", {c});
    vit.norm_pre_b = w.f32(p + "pre_layrnorm.bias", {c});
    // Only the blocks up to the feature layer run; the rest and the final
    // norm are never read (LLaVA-1.5 skips CLIP's last block).
    vit.blocks.resize(size_t(m.vision_blocks));
    for (int l = 0; l < m.vision_blocks; ++l) {
        const std::string b = p + "encoder.layers." + std::to_string(l) + ".";
        VitBlock& blk = vit.blocks[size_t(l)];
        blk.norm1_w = w.f32(b + "layer_norm1.weight", {c});
        blk.norm1_b = w.f32(b + "layer_norm1.bias", {c});
        blk.qkv_w = w.packed({b + "self_attn.q_proj.weight", b + "self_attn.k_proj.weight", b + "self_attn.v_proj.weight"},
                             {{c, c}, {c, c}, {c, c}}, c);
        blk.qkv_b = w.f32_concat({b + "self_attn.q_proj.bias", b + "self_attn.k_proj.bias", b + "self_attn.v_proj.bias"},
                                 {c, c, c});
        blk.proj_w = w.packed({b + "self_attn.out_proj.weight"}, {{c, c}}, c);
        blk.proj_b = w.f32(b + "self_attn.out_proj.bias", {c});
        blk.ls1 = nullptr;
        blk.norm2_w = w.f32(b + "layer_norm2.weight", {c});
        blk.norm2_b = w.f32(b + "layer_norm2.bias", {c});
        blk.fc1_w = w.packed({b + "mlp.fc1.weight"}, {{v.intermediate, c}}, c);
        blk.fc1_b = w.f32(b + "mlp.fc1.bias", {v.intermediate});
        blk.fc2_w = w.packed({b + "mlp.fc2.weight"}, {{c, v.intermediate}}, v.intermediate);
        blk.fc2_b = w.f32(b + "mlp.fc2.bias", {c});
        blk.ls2 = nullptr;
        blk.lce_w = blk.lce_b = nullptr;
    }
    for (int l = m.vision_blocks; l < v.layers; ++l)
        w.skip_prefix(p + "encoder.layers." + std::to_string(l) + ".");
    w.skip_prefix(p + "post_layernorm.");
    vit.norm_w = vit.norm_b = vit.fc_norm_w = vit.fc_norm_b = vit.head_b = nullptr;
    vit.head_w = PackedMatrix{};
    hp.depth = m.vision_blocks;  // the tower as it runs
}

}  // namespace

void llava_load(LlavaModel& m, const std::string& dir, const LlavaLoadOptions& options) {
    m.dir = dir;
    m.cfg = llava_config_read(dir);
    m.preprocess = clip_preprocess_read(dir);
    const LlavaConfig& cfg = m.cfg;
    if (cfg.feature_layers.size() != 1)
        fail(cfg.path, "key 'vision_feature_layer': a list of layers is not supported yet (give one layer)");
    if (m.preprocess.crop_height != cfg.vision.image_size || m.preprocess.crop_width != cfg.vision.image_size)
        fail(m.preprocess.path, "crop_size " + std::to_string(m.preprocess.crop_height) + "x" +
                                    std::to_string(m.preprocess.crop_width) + " differs from the vision tower's " +
                                    "image_size " + std::to_string(cfg.vision.image_size));
    m.files = std::make_unique<SafeTensorsSet>(dir, options.weights_in_memory);
    const LlavaNames names = detect_names(*m.files);
    m.layout = names.layout();
    m.decoder_dtype = dtype_from_option(options.dtype, cfg, *m.files);
    m.vision_blocks = cfg.feature_indices()[0];
    memory_check(dir, "loading the weights (" + std::string(dtype_name(m.decoder_dtype)) + " decoder)",
                 planned_copy_bytes(*m.files, names, m.decoder_dtype),
                 m.decoder_dtype == DType::f32 ? "--dtype bf16 or f16 uses 16-bit weights in place" : "");

    WeightLoader w(*m.files, m.store);
    load_vision(m, w, names.vision);
    const int64_t vc = cfg.vision.hidden, tc = cfg.text.hidden;
    m.proj1 = w.matrix(names.projector + "linear_1.weight", tc, vc, DType::f32);
    m.proj1_bias = cfg.projector_bias ? w.f32(names.projector + "linear_1.bias", {tc}) : nullptr;
    m.proj2 = w.matrix(names.projector + "linear_2.weight", tc, tc, DType::f32);
    m.proj2_bias = cfg.projector_bias ? w.f32(names.projector + "linear_2.bias", {tc}) : nullptr;
    llama_load(m.text, w, cfg.text, names.text, names.head, m.decoder_dtype, cfg.path);
    // How the prefill's bf16 products run is measured once; here, not inside the first request.
    if (m.decoder_dtype == DType::bf16) onednn_bf16_products_pay();
    w.check_all_used("a LLaVA model as " + cfg.path + " describes it");
    m.parameters = w.parameters();
    m.mapped_bytes = w.mapped_bytes();

    if (options.load_tokenizer) {
        m.tokenizer = Tokenizer::load(dir);
        if (m.tokenizer->vocab_size() > cfg.text.vocab)
            fail(dir, "the tokenizer has " + std::to_string(m.tokenizer->vocab_size()) +
                          " tokens but the language model's vocabulary is " + std::to_string(cfg.text.vocab));
        const std::string image_token = "<image>";
        const int32_t id = m.tokenizer->token_id(image_token);
        if (id != cfg.image_token_id)
            fail(dir, "the tokenizer maps '<image>' to " + std::to_string(id) + " but config.json's image token is " +
                          std::to_string(cfg.image_token_id));
    }
}

void llava_vision_state_init(LlavaVisionState& s, const LlavaModel& m) {
    vit_state_init(s.vit, m.vision, 1);
    const int64_t n = m.vision.hp.tokens(), vc = m.cfg.vision.hidden, tc = m.cfg.text.hidden;
    const int64_t lin = linear_w_scratch_floats(std::max(vc, tc));
    s.arena.reserve(size_t(n * (2 * tc + vc) + lin) * sizeof(float) + 4 * 64);
    s.features = s.arena.alloc<float>(size_t(n * tc));
    s.hidden = s.arena.alloc<float>(size_t(n * tc));
    s.selected = s.arena.alloc<float>(size_t(n * vc));
    s.scratch = s.arena.alloc<float>(size_t(lin));
}

int64_t llava_encode_image(const LlavaModel& m, LlavaVisionState& s, const float* pixels, Stage* const* stages,
                           int stage_count, Ledger* ledger) {
    const int64_t vc = m.cfg.vision.hidden;
    const int64_t encoded = vit_encode(m.vision, s.vit, pixels, 1, stages, stage_count, ledger, m.vision_blocks);
    const int64_t n = vit_after_encoder(s.vit, 1, encoded, int(vc), stages, stage_count, ledger);
    // "default" drops the prefix (CLS) token, "full" keeps it.
    const int64_t skip = m.cfg.select_strategy == "default" ? s.vit.tokens[0].prefix : 0;
    const int64_t count = n - skip;
    std::memcpy(s.selected, s.vit.x + skip * vc, size_t(count * vc) * sizeof(float));
    const TokenState& ts = s.vit.tokens[0];
    s.slots.clear();
    for (int64_t t = skip; t < n; ++t) {
        if (t < ts.prefix) {
            s.slots.push_back(int32_t(t));  // CLS kept ("full")
            continue;
        }
        const std::vector<int32_t> patches = ts.patches_of(int(t));
        const int32_t first = patches.empty() ? 0 : *std::min_element(patches.begin(), patches.end());
        s.slots.push_back(int32_t(first + ts.prefix - skip));
    }
    Ledger::ComponentScope scope(ledger, Component::projector);
    linear_w(ledger, s.hidden, s.selected, m.proj1, m.proj1_bias, count, Epilogue::gelu_erf, s.scratch);
    linear_w(ledger, s.features, s.hidden, m.proj2, m.proj2_bias, count, Epilogue::none, s.scratch);
    return count;
}

std::string llava_prompt_text(const std::string& prompt) { return "USER: <image>\n" + prompt + " ASSISTANT:"; }

std::vector<int32_t> llava_prompt_ids(const LlavaModel& m, const std::string& text, int64_t visual_tokens) {
    if (!m.tokenizer) fail(m.dir, "the model was loaded without its tokenizer");
    const std::vector<int32_t> ids = m.tokenizer->encode(text, true);
    std::vector<int32_t> out;
    int images = 0;
    for (int32_t id : ids) {
        if (id == m.cfg.image_token_id) {
            ++images;
            out.insert(out.end(), size_t(visual_tokens), id);
        } else {
            out.push_back(id);
        }
    }
    if (images != 1)
        fail("prompt", "the prompt must hold exactly one <image> token, found " + std::to_string(images));
    return out;
}

void llava_prompt_positions(const LlavaModel& m, const std::vector<int32_t>& ids, const std::vector<int32_t>* slots,
                            int32_t* positions) {
    const int32_t full = m.cfg.visual_tokens_per_image();
    int32_t image_start = -1, seen = 0, shift = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
        if (!slots) {
            positions[i] = int32_t(i);
        } else if (ids[i] == m.cfg.image_token_id) {
            if (image_start < 0) image_start = int32_t(i);
            positions[i] = image_start + (*slots)[size_t(seen++)];
            shift = full - seen;  // text after the image sits where it would with every visual token
        } else {
            positions[i] = int32_t(i) + shift;
        }
    }
}

void llava_embed_prompt(const LlavaModel& m, const std::vector<int32_t>& ids, const float* features,
                        int64_t visual_tokens, float* out) {
    const int64_t d = m.cfg.text.hidden;
    int64_t used = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
        float* row = out + int64_t(i) * d;
        if (ids[i] == m.cfg.image_token_id) {
            if (used >= visual_tokens)
                fail("prompt", "more image tokens than the " + std::to_string(visual_tokens) + " visual features");
            std::memcpy(row, features + used * d, size_t(d) * sizeof(float));
            ++used;
        } else {
            llama_embed(m.text, &ids[i], 1, row);
        }
    }
    if (used != visual_tokens)
        fail("prompt", "the prompt has " + std::to_string(used) + " image tokens for " +
                           std::to_string(visual_tokens) + " visual features");
}

}  // namespace tessera
