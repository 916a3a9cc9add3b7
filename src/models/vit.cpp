#include "models/vit.h"

#include <algorithm>
#include <bitset>
#include <chrono>
#include <cmath>
#include <cstring>
#include <regex>
#include <set>
#include <thread>

#include "io/safetensors.h"
#include "kernels/attention.h"
#include "kernels/channel_attention.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/onednn_linear.h"
#include "kernels/row_shares.h"
#include "tessera/error.h"
#include "tessera/memory.h"
#include "tessera/threads.h"

namespace tessera {

// ---------------------------------------------------------------- variants

namespace {

struct VitSize {
    const char* name;
    int dim, depth, heads;
};
// timm's rows for the plain ViT / DeiT family (mlp_ratio 4).
constexpr VitSize vit_sizes[] = {
    {"tiny", 192, 12, 3}, {"small", 384, 12, 6}, {"medium", 512, 12, 8},
    {"base", 768, 12, 12}, {"large", 1024, 24, 16}, {"huge", 1280, 32, 16},
};

// model_args.block_attention: absent (every block global) or one entry per
// block, {"kind": "global" | "routing" | "window" | "channel", settings...}.
std::vector<BlockAttention> block_attention_read(const nlohmann::json& args, const VitHparams& hp,
                                                 const std::string& where) {
    std::vector<BlockAttention> out(size_t(hp.depth));
    if (!args.contains("block_attention")) return out;
    const nlohmann::json& list = args["block_attention"];
    if (!list.is_array() || list.size() != size_t(hp.depth))
        fail(where, "block_attention must be a list with one entry per block (" + std::to_string(hp.depth) + ")");
    const int side = std::min(hp.grid_h(), hp.grid_w());
    for (int l = 0; l < hp.depth; ++l) {
        const nlohmann::json& e = list[size_t(l)];
        const std::string at = where + ".block_attention[" + std::to_string(l) + "]";
        if (!e.is_object()) fail(at, "expected an object such as {\"kind\": \"global\"}");
        BlockAttention& b = out[size_t(l)];
        const std::string kind = json_string(e, "kind", "", at);
        auto bad = [&](const std::string& what) { fail(at, what); };
        auto allow = [&](std::initializer_list<const char*> keys) {
            for (const auto& [key, value] : e.items()) {
                bool known = key == "kind";
                for (const char* k : keys) known |= key == k;
                if (!known) bad("key '" + key + "' does not apply to " + kind + " attention");
            }
        };
        if (kind == "global") {
            allow({});
        } else if (kind == "routing") {
            allow({"regions", "topk", "scale", "lce_kernel"});
            b.kind = BlockAttention::Kind::routing;
            b.regions = json_int(e, "regions", b.regions, at);
            b.topk = json_int(e, "topk", b.topk, at);
            const std::string scale = json_string(e, "scale", "head", at);
            if (scale != "head" && scale != "channel") bad("scale must be 'head' or 'channel', got '" + scale + "'");
            b.channel_scale = scale == "channel";
            b.lce_kernel = json_int(e, "lce_kernel", 0, at);
            if (b.regions < 1 || b.regions > side)
                bad("regions must be in 1.." + std::to_string(side) + " (the patch grid's shorter side), got " +
                    std::to_string(b.regions));
            if (b.topk < 1 || b.topk > b.regions * b.regions)
                bad("topk must be in 1..regions^2 = " + std::to_string(b.regions * b.regions) + ", got " +
                    std::to_string(b.topk));
            if (b.lce_kernel < 0 || b.lce_kernel > 15 || (b.lce_kernel && b.lce_kernel % 2 == 0))
                bad("lce_kernel must be 0 (none) or odd in 1..15, got " + std::to_string(b.lce_kernel));
        } else if (kind == "window") {
            allow({"window"});
            b.kind = BlockAttention::Kind::window;
            b.window = json_int(e, "window", b.window, at);
            if (b.window < 1 || hp.grid_h() % b.window || hp.grid_w() % b.window)
                bad("window must divide both sides of the " + std::to_string(hp.grid_h()) + "x" +
                    std::to_string(hp.grid_w()) + " patch grid, got " + std::to_string(b.window));
        } else if (kind == "channel") {
            allow({"groups"});
            b.kind = BlockAttention::Kind::channel;
            b.groups = json_int(e, "groups", b.groups, at);
            if (b.groups < 1 || hp.dim % b.groups)
                bad("groups must divide embed_dim " + std::to_string(hp.dim) + ", got " + std::to_string(b.groups));
        } else {
            bad("kind '" + kind + "' is not one of global, routing, window, channel");
        }
    }
    return out;
}

}  // namespace

const char* block_attention_name(BlockAttention::Kind kind) {
    switch (kind) {
        case BlockAttention::Kind::global: return "global";
        case BlockAttention::Kind::routing: return "routing";
        case BlockAttention::Kind::window: return "window";
        case BlockAttention::Kind::channel: return "channel";
    }
    return "?";
}

VitHparams vit_hparams_from_timm(const TimmConfig& cfg) {
    const std::string& where = cfg.path;
    VitHparams hp;
    // vit_tiny_patch16_224, deit_small_patch16_224, vit_base_patch32_384, ...
    // At most 4 digits each: longer numbers are no timm name (and would overflow stoi).
    static const std::regex name_re(R"(^(vit|deit)_([a-z]+)_patch(\d{1,4})_(\d{1,4})$)");
    std::smatch m;
    bool named = std::regex_match(cfg.architecture, m, name_re);
    if (cfg.architecture.find("distilled") != std::string::npos)
        fail(where, "architecture '" + cfg.architecture + "' has a distillation token, which is not supported");
    if (named) {
        const VitSize* size = nullptr;
        for (const VitSize& s : vit_sizes)
            if (m[2] == s.name) size = &s;
        if (size) {
            hp.dim = size->dim, hp.depth = size->depth, hp.heads = size->heads;
            hp.mlp_hidden = 4 * size->dim;
        }
        hp.patch = std::stoi(m[3]);
        hp.img_h = hp.img_w = std::stoi(m[4]);
        if (!size && cfg.model_args.empty())
            fail(where, "unknown ViT size in architecture '" + cfg.architecture + "' and no model_args");
    } else if (cfg.model_args.empty()) {
        fail(where, "unknown architecture '" + cfg.architecture +
                        "' (expected a timm vit_* or deit_* name) and no model_args to describe it");
    }

    const nlohmann::json& a = cfg.model_args;
    const std::string args_where = where + ": model_args";
    if (a.contains("img_size")) {
        const auto& v = a["img_size"];
        if (v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer()) {
            hp.img_h = v[0].get<int>(), hp.img_w = v[1].get<int>();
        } else {
            hp.img_h = hp.img_w = json_int(a, "img_size", hp.img_h, args_where);
        }
    }
    hp.patch = json_int(a, "patch_size", hp.patch, args_where);
    hp.dim = json_int(a, "embed_dim", hp.dim, args_where);
    hp.depth = json_int(a, "depth", hp.depth, args_where);
    hp.heads = json_int(a, "num_heads", hp.heads, args_where);
    double mlp_ratio = json_number(a, "mlp_ratio", double(hp.mlp_hidden) / hp.dim, args_where);
    hp.mlp_hidden = int(hp.dim * mlp_ratio);
    hp.qkv_bias = json_bool(a, "qkv_bias", true, args_where);
    hp.class_token = json_bool(a, "class_token", true, args_where);
    hp.pre_norm = json_bool(a, "pre_norm", false, args_where);
    hp.norm_eps = float(json_number(a, "norm_eps", 1e-6, args_where));
    hp.num_classes = cfg.num_classes;
    hp.global_pool = cfg.global_pool;
    std::string act = json_string(a, "act_layer", "gelu", args_where);

    auto bad = [&](const std::string& what) { fail(where, what); };
    if (act != "gelu" && act != "quick_gelu") bad("model_args.act_layer '" + act + "' is not supported (gelu or quick_gelu)");
    hp.act = act;
    if (hp.patch < 1 || hp.patch > 64) bad("model_args.patch_size must be in 1..64, got " + std::to_string(hp.patch));
    if (hp.img_h < hp.patch || hp.img_w < hp.patch || hp.img_h % hp.patch || hp.img_w % hp.patch || hp.img_h > 4096 ||
        hp.img_w > 4096)
        bad("model_args.img_size " + std::to_string(hp.img_h) + "x" + std::to_string(hp.img_w) +
            " must be a multiple of patch_size " + std::to_string(hp.patch) + " and at most 4096");
    if (hp.dim < 1 || hp.dim > 16384) bad("model_args.embed_dim must be in 1..16384");
    if (hp.depth < 1 || hp.depth > max_vit_depth)
        bad("model_args.depth must be in 1.." + std::to_string(max_vit_depth));
    if (hp.heads < 1 || hp.dim % hp.heads)
        bad("model_args.num_heads " + std::to_string(hp.heads) + " must divide embed_dim " + std::to_string(hp.dim));
    if (hp.mlp_hidden < 1 || hp.mlp_hidden > 16 * 16384) bad("model_args.mlp_ratio gives an invalid MLP width");
    if (!(hp.norm_eps > 0.0f)) bad("model_args.norm_eps must be positive");
    if (hp.global_pool != "token" && hp.global_pool != "avg")
        bad("global_pool '" + hp.global_pool + "' is not supported (token or avg)");
    if (hp.global_pool == "token" && !hp.class_token) bad("global_pool 'token' needs class_token");
    hp.block_attention = block_attention_read(a, hp, args_where);
    return hp;
}

EncoderShape VitModel::encoder_shape() const {
    return {hp.depth, hp.heads, hp.dim, hp.prefix(), hp.grid_h(), hp.grid_w()};
}

// ---------------------------------------------------------------- loading

namespace {

// Hands out f32 copies of the file's tensors, checking each shape, and
// remembers which tensors were used so leftovers can be reported.
class WeightReader {
public:
    WeightReader(const SafeTensors& file, Arena& arena, DType matrices)
        : file_(file), arena_(arena), matrices_(matrices) {}

    const float* take(const std::string& name, std::vector<int64_t> shape) {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        float* dst = arena_.alloc<float>(size_t(n));
        file_.read_f32(name, shape, dst);
        used_.insert(name);
        parameters_ += n;
        return dst;
    }
    const float* take_optional(const std::string& name, std::vector<int64_t> shape) {
        return file_.find(name) ? take(name, std::move(shape)) : nullptr;
    }
    // A matrix [out, in] (shape as stored, e.g. a conv weight [out, 3, p, p]) packed for linear_packed.
    PackedMatrix take_packed(const std::string& name, std::vector<int64_t> shape, int64_t out, int64_t in) {
        std::vector<float> raw(static_cast<size_t>(out * in));
        file_.read_f32(name, shape, raw.data());
        const WeightPlan plan = plan_weights(out, in, matrices_);
        used_.insert(name);
        parameters_ += out * in;
        return pack_weights(plan, raw.data(), arena_.alloc_bytes(plan.bytes));
    }
    void check_all_used(const std::string& what) const {
        for (const TensorInfo& t : file_.tensors())
            if (!used_.count(t.name))
                fail(file_.path(), "tensor '" + t.name + "' is not part of " + what +
                                       " (config.json and the weights disagree)");
    }
    int64_t parameters() const { return parameters_; }
    size_t used() const { return used_.size(); }

private:
    const SafeTensors& file_;
    Arena& arena_;
    DType matrices_;
    std::set<std::string, std::less<>> used_;
    int64_t parameters_ = 0;
};

}  // namespace

DType vit_matrix_dtype(const std::string& option, const std::string& where) {
    if (option.empty() || option == "auto" || option == "f32") return DType::f32;
    if (option == "bf16") return DType::bf16;
    fail(where, "dtype '" + option + "' is not available for a ViT classifier (f32 or bf16)");
}

const char* vit_linear_path(const VitModel& model) {
    if (model.blocks.empty() || !model.blocks[0].qkv_w.onednn_layout) return "packed";
    // bf16 weights whose products run in f32 (onednn_bf16_products_pay)
    return model.matrix_dtype == DType::bf16 && model.blocks[0].qkv_w.dtype == DType::f32 ? "onednn-f32" : "onednn";
}

void vit_load(VitModel& model, const std::string& dir, DType matrices) {
    if (matrices != DType::f32 && matrices != DType::bf16)
        fail(dir, std::string("ViT matrices run in f32 or bf16, not ") + dtype_name(matrices));
    TimmConfig cfg = timm_config_read(dir + "/config.json");
    SafeTensors file(dir + "/model.safetensors");
    const VitHparams hp = vit_hparams_from_timm(cfg);
    model.dir = dir;
    model.architecture = cfg.architecture;
    model.hp = hp;
    model.preprocess = cfg.preprocess;
    model.matrix_dtype = matrices;
    if (model.preprocess.input_height != hp.img_h || model.preprocess.input_width != hp.img_w)
        fail(cfg.path, "pretrained_cfg.input_size " + std::to_string(model.preprocess.input_height) + "x" +
                           std::to_string(model.preprocess.input_width) + " differs from the model's img_size " +
                           std::to_string(hp.img_h) + "x" + std::to_string(hp.img_w));

    size_t bytes = 0;  // + a panel of padding per matrix
    for (const TensorInfo& t : file.tensors()) {
        // Packed matrices: every >= 2-D tensor but the token tables ([1, ...])
        // and the depthwise LCE kernels, which stay f32.
        const bool matrix = t.shape.size() >= 2 && t.shape[0] > 1 && t.name.find(".lepe.") == std::string::npos;
        bytes += (matrix ? plan_weights(t.shape[0], t.numel() / t.shape[0], matrices).bytes
                         : size_t(t.numel()) * sizeof(float)) + 64;
    }
    memory_check(file.path(), std::string("loading the weights as ") + (matrices == DType::f32 ? "f32" : "bf16"), bytes);
    model.weights.reserve(bytes);
    WeightReader r(file, model.weights, matrices);

    const int64_t c = hp.dim, hidden = hp.mlp_hidden, n = hp.tokens();
    const int64_t patch_len = 3 * int64_t(hp.patch) * hp.patch;
    model.patch_w = r.take_packed("patch_embed.proj.weight", {c, 3, hp.patch, hp.patch}, c, patch_len);
    // timm: pre-norm (CLIP-style) models have a bias-free patch convolution.
    model.patch_b = hp.pre_norm ? r.take_optional("patch_embed.proj.bias", {c}) : r.take("patch_embed.proj.bias", {c});
    model.cls_token = hp.class_token ? r.take("cls_token", {1, 1, c}) : nullptr;
    model.pos_embed = r.take("pos_embed", {1, n, c});
    model.norm_pre_w = hp.pre_norm ? r.take("norm_pre.weight", {c}) : nullptr;
    model.norm_pre_b = hp.pre_norm ? r.take("norm_pre.bias", {c}) : nullptr;
    model.blocks.resize(size_t(hp.depth));
    for (int i = 0; i < hp.depth; ++i) {
        const std::string p = "blocks." + std::to_string(i) + ".";
        VitBlock& b = model.blocks[size_t(i)];
        b.norm1_w = r.take(p + "norm1.weight", {c});
        b.norm1_b = r.take(p + "norm1.bias", {c});
        b.qkv_w = r.take_packed(p + "attn.qkv.weight", {3 * c, c}, 3 * c, c);
        b.qkv_b = hp.qkv_bias ? r.take(p + "attn.qkv.bias", {3 * c}) : nullptr;
        b.proj_w = r.take_packed(p + "attn.proj.weight", {c, c}, c, c);
        b.proj_b = r.take(p + "attn.proj.bias", {c});
        b.ls1 = r.take_optional(p + "ls1.gamma", {c});
        b.norm2_w = r.take(p + "norm2.weight", {c});
        b.norm2_b = r.take(p + "norm2.bias", {c});
        b.fc1_w = r.take_packed(p + "mlp.fc1.weight", {hidden, c}, hidden, c);
        b.fc1_b = r.take(p + "mlp.fc1.bias", {hidden});
        b.fc2_w = r.take_packed(p + "mlp.fc2.weight", {c, hidden}, c, hidden);
        b.fc2_b = r.take(p + "mlp.fc2.bias", {c});
        b.ls2 = r.take_optional(p + "ls2.gamma", {c});
        const int k = hp.block_attention[size_t(i)].lce_kernel;
        b.lce_w = k ? r.take(p + "attn.lepe.weight", {c, 1, k, k}) : nullptr;
        b.lce_b = k ? r.take(p + "attn.lepe.bias", {c}) : nullptr;
    }
    // timm: avg pooling moves the final norm after pooling (fc_norm).
    model.fc_norm_w = r.take_optional("fc_norm.weight", {c});
    model.fc_norm_b = model.fc_norm_w ? r.take("fc_norm.bias", {c}) : nullptr;
    model.norm_w = model.fc_norm_w ? r.take_optional("norm.weight", {c}) : r.take("norm.weight", {c});
    model.norm_b = model.norm_w ? r.take("norm.bias", {c}) : nullptr;
    if (hp.num_classes) model.head_w = r.take_packed("head.weight", {hp.num_classes, c}, hp.num_classes, c);
    model.head_b = hp.num_classes ? r.take("head.bias", {hp.num_classes}) : nullptr;
    r.check_all_used(cfg.architecture + " as config.json describes it (depth " + std::to_string(hp.depth) + ")");
    model.parameters = r.parameters();
    model.tensor_count = int64_t(r.used());
}

// ---------------------------------------------------------------- forward

void vit_state_init(VitState& s, const VitModel& model, int max_batch) {
    const VitHparams& hp = model.hp;
    const int64_t b = max_batch, n = hp.tokens(), c = hp.dim;
    const int64_t grid = int64_t(hp.grid_h()) * hp.grid_w(), patch_len = 3 * hp.patch * hp.patch;
    s.max_batch = max_batch;
    s.stage_scratch_floats = n * (c + n) + 8 * n + 2 * c;
    int64_t channel_floats = 0;
    s.routed.assign(size_t(hp.depth), RoutedAttention{});
    s.windowed.assign(size_t(hp.depth), WindowedAttention{});
    for (int l = 0; l < hp.depth && l < int(hp.block_attention.size()); ++l) {
        const BlockAttention& a = hp.block_attention[size_t(l)];
        if (a.kind == BlockAttention::Kind::routing)
            s.routed[size_t(l)].init(hp.prefix(), hp.grid_h(), hp.grid_w(), hp.dim, a.regions, a.topk);
        if (a.kind == BlockAttention::Kind::window)
            s.windowed[size_t(l)].init(hp.prefix(), hp.grid_h(), hp.grid_w(), a.window);
        if (a.kind == BlockAttention::Kind::channel)
            channel_floats = std::max(channel_floats, channel_attention_scratch_floats(c, a.groups));
    }
    // Whole-block regions take batches of at most row_share_max_rows a thread.
    const int64_t spare_rows = std::min(b * n, row_share_max_rows * threads_count());
    const int64_t floats = b * n * c * 3 + (b * n + spare_rows) * 3 * c + b * n * hp.mlp_hidden + b * grid * patch_len +
                           attention_scratch_floats(hp.heads, n, hp.head_dim(), threads_count()) + 2 * n + b * hp.heads * n + b * c +
                           s.stage_scratch_floats + channel_floats;
    memory_check(model.dir, "a batch of " + std::to_string(max_batch) + " images (activations)",
                 uint64_t(floats) * sizeof(float));
    s.arena.reserve(size_t(floats) * sizeof(float) + 16 * 64);
    s.x = s.arena.alloc<float>(size_t(b * n * c));
    s.xn = s.arena.alloc<float>(size_t(b * n * c));
    s.qkv = s.arena.alloc<float>(size_t(b * n * 3 * c));
    s.qkv_spare = s.arena.alloc<float>(size_t(spare_rows * 3 * c));
    s.qkv_spare_rows = spare_rows;
    s.attn = s.arena.alloc<float>(size_t(b * n * c));
    s.hidden = s.arena.alloc<float>(size_t(b * n * hp.mlp_hidden));
    s.patches = s.arena.alloc<float>(size_t(b * grid * patch_len));
    s.attention_slots = threads_count();
    s.scores = s.arena.alloc<float>(size_t(attention_scratch_floats(hp.heads, n, hp.head_dim(), s.attention_slots)));
    s.key_bias = s.arena.alloc<float>(size_t(n));
    s.cls_probs = s.arena.alloc<float>(size_t(b * hp.heads * n));
    s.cls_remap = s.arena.alloc<float>(size_t(n));
    s.pooled = s.arena.alloc<float>(size_t(b * c));
    s.stage_scratch = s.arena.alloc<float>(size_t(s.stage_scratch_floats));
    s.channel_maps = channel_floats ? s.arena.alloc<float>(size_t(channel_floats)) : nullptr;
    s.tokens.assign(size_t(max_batch), TokenState{});
    s.tokens_entering_block.assign(size_t(hp.depth), 0);
    s.share_ledgers.assign(size_t(std::max(0, threads_count() - 1)), Ledger{});
    s.paced_shares = ThreadPace::chosen();
}

namespace {

// Conv2d(3, dim, kernel=patch, stride=patch) as im2col + one product.
void patch_embed(const VitModel& m, VitState& s, const float* pixels, int batch, Ledger* ledger) {
    const VitHparams& hp = m.hp;
    const int p = hp.patch, gh = hp.grid_h(), gw = hp.grid_w(), len = 3 * p * p;
    const int64_t grid = int64_t(gh) * gw;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; ++b)
        for (int g = 0; g < int(grid); ++g) {
            const int gy = g / gw, gx = g % gw;
            float* dst = s.patches + (b * grid + g) * len;
            for (int ch = 0; ch < 3; ++ch)
                for (int ky = 0; ky < p; ++ky) {
                    const float* src = pixels + ((int64_t(b) * 3 + ch) * hp.img_h + gy * p + ky) * hp.img_w + gx * p;
                    std::memcpy(dst + (ch * p + ky) * p, src, size_t(p) * sizeof(float));
                }
        }
    Ledger::ComponentScope scope(ledger, Component::patch_embed);
    // Patch tokens land after the prefix of each image: run one product per image.
    const int64_t n = hp.tokens(), c = hp.dim;
    for (int b = 0; b < batch; ++b)
        linear_packed(ledger, s.x + (b * n + hp.prefix()) * c, s.patches + b * grid * len, m.patch_w, m.patch_b, grid);
    for (int b = 0; b < batch; ++b) {
        float* x = s.x + b * n * c;
        if (m.cls_token) std::memcpy(x, m.cls_token, size_t(c) * sizeof(float));
        for (int64_t i = 0; i < n * c; ++i) x[i] += m.pos_embed[i];
    }
}

// After a reorganization, the CLS row of each head follows the tokens: the
// entry of a merged or fused token is the sum of its parts' attention. Rows
// are repacked from stride `from` to the new count (row h lands at or before
// where it was read, so one forward pass over the heads is safe).
void carry_cls_row(float* cls, int heads, const TokenState& ts, float* scratch) {
    const int from = ts.last_map_count, to = ts.count;
    for (int h = 0; h < heads; ++h) {
        const float* row = cls + int64_t(h) * from;
        std::fill(scratch, scratch + to, 0.0f);
        for (int t = 0; t < from; ++t)
            if (ts.last_map[size_t(t)] >= 0) scratch[ts.last_map[size_t(t)]] += row[t];
        std::copy(scratch, scratch + to, cls + int64_t(h) * to);
    }
}

// The attention a block was trained with, when it is not global: routing
// (with LCE), window or channel-group attention. Routing and window follow
// the patch grid, so the tokens must still be the intact grid there; channel
// attention is global and takes any token set. Returns false for global
// blocks.
bool trained_attention(const VitModel& m, VitState& s, int l, const AttentionView& view, Ledger* ledger) {
    const VitHparams& hp = m.hp;
    if (l >= int(hp.block_attention.size())) return false;
    const BlockAttention& a = hp.block_attention[size_t(l)];
    if (a.kind == BlockAttention::Kind::global) return false;
    const TokenState& ts = *view.state;
    if (a.kind != BlockAttention::Kind::channel && (view.tokens != ts.count || !ts.is_intact_grid()))
        fail(m.dir, "block " + std::to_string(l) + " was trained with " + block_attention_name(a.kind) +
                        " attention over the patch grid, but an earlier stage changed the tokens (" +
                        std::to_string(ts.count) + " left); put token-reducing stages after block " +
                        std::to_string(l));
    const int64_t c = hp.dim;
    if (a.kind == BlockAttention::Kind::channel) {
        if (view.cls_probs)
            fail(m.dir, "block " + std::to_string(l) + " has channel-group attention, which has no CLS attention "
                        "row; a stage asked for one there");
        ChannelAttentionArgs args{view.qkv, view.out, view.tokens, c, a.groups, s.channel_maps};
        channel_attention(ledger, args);
        return true;
    }
    GridAttentionCall call{view.qkv, view.out, view.tokens, view.heads, view.head_dim, view.scale, view.key_bias,
                           view.cls_probs};
    if (a.kind == BlockAttention::Kind::window) {
        s.windowed[size_t(l)].run(ledger, call);
        return true;
    }
    if (a.channel_scale) call.scale = 1.0f / std::sqrt(float(c));
    s.routed[size_t(l)].run(ledger, call);
    if (a.lce_kernel)  // local context enhancement: depthwise conv of V over the grid, added before proj
        grid_depthwise_conv_add(ledger, view.qkv + 2 * c, 3 * c, view.out, c, hp.prefix(), hp.grid_h(), hp.grid_w(),
                                c, m.blocks[size_t(l)].lce_w, m.blocks[size_t(l)].lce_b, a.lce_kernel);
    return true;
}

// y += gamma * t (layer scale), or y += t.
void add_scaled(float* y, const float* t, const float* gamma, int64_t rows, int64_t c) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < c; ++i) y[r * c + i] += (gamma ? gamma[i] : 1.0f) * t[r * c + i];
}

// One block's row-wise sub-layers, each over rows [r0, r0 + rows) of the
// batch's sequences (images one after another at stride n) on one thread.
struct BlockRows {
    const VitHparams& hp;
    const VitBlock& blk;
    VitState& s;
    // bf16 layers on oneDNN (CPUs with bf16 arithmetic): the layer norms and
    // fc1 write bf16 for the products that read them, instead of f32 that
    // oneDNN converts in a separate pass (7% of a ViT-S forward).
    bool qkv16, mlp16;
    // The attention's products in bf16 too, and its output written in bf16
    // for the projection (into xn, free once qkv has read it).
    bool attn16;

    BlockRows(const VitModel& m, VitState& state, int l) : hp(m.hp), blk(m.blocks[size_t(l)]), s(state) {
        auto on_onednn_bf16 = [](const PackedMatrix& w) { return w.dtype == DType::bf16 && w.onednn_layout; };
        qkv16 = on_onednn_bf16(blk.qkv_w);
        mlp16 = on_onednn_bf16(blk.fc1_w) && on_onednn_bf16(blk.fc2_w) && hp.act != "quick_gelu";
        attn16 = qkv16 && on_onednn_bf16(blk.proj_w);
    }
    uint16_t* attn16_out() const { return reinterpret_cast<uint16_t*>(s.xn); }

    // qkv = LN1(x) W_qkv + b
    void normalize_qkv(float* qkv, int64_t r0, int64_t rows, Ledger* led) const {
        const int64_t c = hp.dim;
        Ledger::ComponentScope scope(led, Component::attention);
        if (qkv16) {
            auto* xn16 = reinterpret_cast<uint16_t*>(s.xn) + r0 * c;
            layer_norm_bf16(xn16, s.x + r0 * c, blk.norm1_w, blk.norm1_b, rows, c, hp.norm_eps);
            onednn_linear_bf16_io(led, qkv + r0 * 3 * c, DType::f32, xn16, blk.qkv_w, blk.qkv_b, rows, Epilogue::none);
        } else {
            layer_norm(s.xn + r0 * c, s.x + r0 * c, blk.norm1_w, blk.norm1_b, rows, c, hp.norm_eps);
            linear_packed(led, qkv + r0 * 3 * c, s.xn + r0 * c, blk.qkv_w, blk.qkv_b, rows);
        }
    }

    // The global attention of image b's n tokens (qkv at its rows), writing
    // s.attn, or attn16_out() with attn16.
    AttentionArgs attention_args(const float* qkv, int b, int64_t n, const float* key_bias, float* cls_probs) const {
        const int64_t c = hp.dim, hd = hp.head_dim();
        AttentionArgs args{qkv + b * n * 3 * c, s.attn + b * n * c, n, hp.heads, hd, 1.0f / std::sqrt(float(hd)),
                           key_bias, cls_probs, s.scores, s.attention_slots};
        // Attention follows the linear layers onto oneDNN where they run there.
        args.onednn = blk.qkv_w.onednn_layout != nullptr;
        args.bf16 = attn16;
        args.out_bf16 = attn16 ? attn16_out() + b * n * c : nullptr;
        return args;
    }

    // x += proj(attention output), scaled by ls1 where the block has it.
    void project(int64_t r0, int64_t rows, Ledger* led) const {
        const int64_t c = hp.dim;
        Ledger::ComponentScope scope(led, Component::attention);
        float* x = s.x + r0 * c;
        if (attn16) {
            float* y = blk.ls1 ? s.attn + r0 * c : x;
            onednn_linear_bf16_io(led, y, DType::f32, attn16_out() + r0 * c, blk.proj_w, blk.proj_b, rows,
                                  blk.ls1 ? Epilogue::none : Epilogue::residual);
            if (blk.ls1) add_scaled(x, y, blk.ls1, rows, c);
        } else if (blk.ls1) {
            linear_packed(led, s.xn + r0 * c, s.attn + r0 * c, blk.proj_w, blk.proj_b, rows);
            add_scaled(x, s.xn + r0 * c, blk.ls1, rows, c);
        } else {
            linear_packed(led, x, s.attn + r0 * c, blk.proj_w, blk.proj_b, rows, Epilogue::residual);
        }
    }

    // x += MLP(LN2(x)), scaled by ls2 where the block has it.
    void mlp(int64_t r0, int64_t rows, Ledger* led) const {
        const int64_t c = hp.dim, hidden = hp.mlp_hidden;
        Ledger::ComponentScope scope(led, Component::mlp);
        float* x = s.x + r0 * c;
        if (mlp16) {
            // LN2 and fc1's GELU output written in bf16 for the next product.
            auto* xn16 = reinterpret_cast<uint16_t*>(s.xn) + r0 * c;
            auto* hidden16 = reinterpret_cast<uint16_t*>(s.hidden) + r0 * hidden;
            layer_norm_bf16(xn16, x, blk.norm2_w, blk.norm2_b, rows, c, hp.norm_eps);
            onednn_linear_bf16_io(led, hidden16, DType::bf16, xn16, blk.fc1_w, blk.fc1_b, rows, Epilogue::gelu_erf);
            // Not into xn: its f32 rows overlap other threads' bf16 rows, still to be read.
            float* y = blk.ls2 ? s.attn + r0 * c : x;
            onednn_linear_bf16_io(led, y, DType::f32, hidden16, blk.fc2_w, blk.fc2_b, rows,
                                  blk.ls2 ? Epilogue::none : Epilogue::residual);
            if (blk.ls2) add_scaled(x, y, blk.ls2, rows, c);
            return;
        }
        float* xn = s.xn + r0 * c;
        float* h = s.hidden + r0 * hidden;
        layer_norm(xn, x, blk.norm2_w, blk.norm2_b, rows, c, hp.norm_eps);
        if (hp.act == "quick_gelu") {
            linear_packed(led, h, xn, blk.fc1_w, blk.fc1_b, rows);
            quick_gelu(h, rows * hidden);
        } else {
            linear_packed(led, h, xn, blk.fc1_w, blk.fc1_b, rows, Epilogue::gelu_erf);
        }
        if (blk.ls2) {
            linear_packed(led, xn, h, blk.fc2_w, blk.fc2_b, rows);
            add_scaled(x, xn, blk.ls2, rows, c);
        } else {
            linear_packed(led, x, h, blk.fc2_w, blk.fc2_b, rows, Epilogue::residual);
        }
    }
};

// What the stages of a chain ask of block l.
Signals chain_signals(Stage* const* stages, int stage_count, int l) {
    Signals all;
    for (int i = 0; i < stage_count; ++i) {
        const Signals one = stages[i]->signals(l);
        all.cls_attention |= one.cls_attention;
        all.after_attention |= one.after_attention;
        all.attention |= one.attention;
    }
    return all;
}

// How block l can take part in a region of whole blocks (run_region).
enum class InRegion {
    no,      // it runs as separate regions, hooks between them (run_block_with_hooks)
    whole,   // no stage acts in it
    to_hook  // up to its projection; after-attention hooks, then its MLP, follow
};

// Block l joins a region of `threads` threads (0: it cannot) where its
// attention is the global one and has a form that runs a share of the
// query rows (the fused one), no stage computes the attention, the row
// shares are neither too small nor too large (kernels/row_shares.h), shares
// are not paced, and xn holds rows of one width through the block (see
// BlockRows::mlp).
InRegion block_in_region(const VitModel& m, VitState& s, int l, int batch, int64_t n, const Signals& signals,
                         Ledger* ledger, int& threads) {
    const VitHparams& hp = m.hp;
    threads = 0;
    if (signals.attention || s.paced_shares || batch * n > s.qkv_spare_rows) return InRegion::no;
    if (l < int(hp.block_attention.size()) && hp.block_attention[size_t(l)].kind != BlockAttention::Kind::global)
        return InRegion::no;
    for (int b = 0; b < batch && batch > 1; ++b)
        if (s.tokens[size_t(b)].proportional_attention) return InRegion::no;  // one key-bias row serves one image
    const BlockRows block(m, s, l);
    if (block.qkv16 != block.attn16 || block.attn16 != block.mlp16) return InRegion::no;
    if (!attention_rows_available(block.attention_args(s.qkv, 0, n, nullptr, nullptr))) return InRegion::no;
    threads = row_share_threads(batch * n, ledger, s.share_ledgers);
    if (threads == 0 || threads > s.attention_slots) return threads = 0, InRegion::no;
    return signals.after_attention ? InRegion::to_hook : InRegion::whole;
}

// A region of whole blocks: the MLP of the block before first (whose
// after-attention hooks have run) where mlp_first, blocks [first, end), then
// up to the projection of block `end` where hook_last.
struct RegionPlan {
    int first = 0, end = 0;
    bool mlp_first = false, hook_last = false;
    int threads = 0;
};

// One parallel region for a plan: each thread takes the same rows of the
// batch through every sub-layer, LN1 and qkv, attention queries, projection
// and MLP. The threads meet once a block, after qkv, as attention reads
// every row's keys and values; instead of three or four fork-joins a block,
// whose ends left the faster thread waiting (docs/performance.md). qkv
// alternates between two buffers from block to block, so that a thread
// writing the next block's qkv rows never overwrites keys another thread is
// still reading. Returns the qkv of the last block.
float* run_region(const VitModel& m, VitState& s, const RegionPlan& plan, int batch, int64_t n,
                  Stage* const* stages, int stage_count, Ledger* ledger) {
    const int64_t rows = batch * n;
    const int heads = m.hp.heads, last = plan.hook_last ? plan.end : plan.end - 1;
    std::bitset<max_vit_depth> want_cls;  // the threads read it; signals() stay on this one
    for (int l = plan.first; l <= last; ++l) want_cls[size_t(l)] = chain_signals(stages, stage_count, l).cls_attention;
    if (batch == 1 && s.tokens[0].proportional_attention)
        for (int64_t j = 0; j < n; ++j) s.key_bias[j] = std::log(s.tokens[0].size[size_t(j)]);
    const float* key_bias = batch == 1 && s.tokens[0].proportional_attention ? s.key_bias : nullptr;
    auto qkv_of = [&](int l) { return (l - plan.first) % 2 ? s.qkv_spare : s.qkv; };
    if (ledger)
        for (int t = 1; t < plan.threads; ++t) s.share_ledgers[size_t(t - 1)].book_as(*ledger);
    RegionSteps steps;
    const std::exception_ptr error = run_on_threads(plan.threads, [&](int t, int nt) {
        Ledger* led = !ledger ? nullptr : t == 0 ? ledger : &s.share_ledgers[size_t(t - 1)];
        const int64_t first = rows * t / nt, count = rows * (t + 1) / nt - first;
        auto lag = [&] {
            if (s.region_lag_us && t == nt - 1) std::this_thread::sleep_for(std::chrono::microseconds(s.region_lag_us));
        };
        if (plan.mlp_first) steps.run([&] { BlockRows(m, s, plan.first - 1).mlp(first, count, led); });
        for (int l = plan.first; l <= last; ++l) {
            const BlockRows block(m, s, l);
            float* const qkv = qkv_of(l);
            lag();
            steps.run([&] { block.normalize_qkv(qkv, first, count, led); });
            steps.barrier();
            lag();
            steps.run([&] {
                Ledger::ComponentScope scope(led, Component::attention);
                for (int b = 0; b < batch; ++b) {  // this thread's queries of each image
                    const int64_t q0 = std::max(first, b * n), q1 = std::min(first + count, (b + 1) * n);
                    if (q0 >= q1) continue;
                    float* cls = want_cls[size_t(l)] ? s.cls_probs + b * heads * n : nullptr;
                    attention_rows(led, block.attention_args(qkv, b, n, key_bias, cls), t, q0 - b * n, q1 - b * n);
                }
                block.project(first, count, led);
                if (l < plan.end) block.mlp(first, count, led);
            });
        }
    });
    if (ledger)
        for (int t = 1; t < plan.threads; ++t) ledger->absorb(s.share_ledgers[size_t(t - 1)]);
    if (error) std::rethrow_exception(error);
    steps.rethrow();
    return qkv_of(last);
}

// The stages' after-attention hooks of block l on each image (qkv: the
// block's), which may shorten the sequences; returns the token count after
// them.
int64_t run_after_attention_hooks(const VitModel& m, VitState& s, int l, int batch, int64_t n, const float* qkv,
                                  Stage* const* stages, int stage_count, bool want_cls, Ledger* ledger) {
    const int64_t c = m.hp.dim, heads = m.hp.heads;
    int64_t new_n = -1;
    for (int b = 0; b < batch; ++b) {
        BlockView view;
        view.block = l, view.ledger = ledger, view.dim = int(c), view.heads = int(heads);
        view.x = s.x + b * n * c;
        view.qkv = qkv + b * n * 3 * c;
        view.cls_attention = want_cls ? s.cls_probs + b * heads * n : nullptr;
        view.state = &s.tokens[size_t(b)];
        view.scratch = s.stage_scratch, view.scratch_floats = s.stage_scratch_floats;
        for (int i = 0; i < stage_count; ++i) {
            const int before = view.state->count;
            {
                Ledger::StageScope stage_scope(ledger, stages[i]->name());
                stages[i]->encoder_after_attention(view);
            }
            const TokenState& ts = *view.state;
            if (ts.count != before) {
                view.qkv = nullptr;  // stale for later stages in this block
                if (want_cls) carry_cls_row(s.cls_probs + b * heads * n, int(heads), ts, s.cls_remap);
            }
            if (s.record_trace && ts.count != before)
                s.trace[size_t(b)].push_back({l, stages[i]->name(), ts.count, ts.patch_owner,
                                              std::vector<TokenKind>(ts.kind.begin(), ts.kind.begin() + ts.count)});
        }
        const int64_t count = view.state->count;
        if (new_n >= 0 && count != new_n)
            fail("stage chain", "images of one batch left block " + std::to_string(l) + " with different token counts");
        new_n = count;
        // Images sit at stride n; pack them at the new stride.
        if (count != n && b > 0) std::memmove(s.x + b * count * c, view.x, size_t(count * c) * sizeof(float));
    }
    return new_n;
}

// Block l with the stages' hooks: LN1 and qkv, attention (a stage's, the
// block's trained form, or global), the projection, the after-attention
// hooks and the MLP, row-wise sub-layers each as one region of row shares.
// Returns the token count per image after the block.
int64_t run_block_with_hooks(const VitModel& m, VitState& s, int l, int batch, int64_t n, Stage* const* stages,
                             int stage_count, const Signals& signals, Ledger* ledger) {
    const VitHparams& hp = m.hp;
    const int64_t c = hp.dim, heads = hp.heads;
    auto pace = [&](ThreadPace& p) { return s.paced_shares ? &p : nullptr; };
    const BlockRows block(m, s, l);
    const bool want_cls = signals.cls_attention;

    // y = x + Attn(LN1(x))
    for_row_shares(batch * n, ledger, s.share_ledgers, pace(s.paces.qkv),
                   [&](int64_t r0, int64_t rows, Ledger* led) { block.normalize_qkv(s.qkv, r0, rows, led); });
    {
        Ledger::ComponentScope scope(ledger, Component::attention);
        for (int b = 0; b < batch; ++b) {
            const TokenState& ts = s.tokens[size_t(b)];
            if (ts.proportional_attention)
                for (int64_t j = 0; j < n; ++j) s.key_bias[j] = std::log(ts.size[size_t(j)]);
            AttentionArgs args = block.attention_args(s.qkv, b, n, ts.proportional_attention ? s.key_bias : nullptr,
                                                      want_cls ? s.cls_probs + b * heads * n : nullptr);
            AttentionView view;
            view.block = l, view.ledger = ledger, view.state = &ts;
            view.qkv = args.qkv, view.out = args.out;
            view.tokens = int(n), view.heads = int(heads), view.head_dim = int(args.head_dim);
            view.scale = args.scale, view.key_bias = args.key_bias, view.cls_probs = args.cls_probs;
            bool handled = false;
            for (int i = 0; i < stage_count && !handled && signals.attention; ++i) {
                Ledger::StageScope stage_scope(ledger, stages[i]->name());
                handled = stages[i]->encoder_attention(view);
                if (handled && l < int(hp.block_attention.size()) &&
                    hp.block_attention[size_t(l)].kind != BlockAttention::Kind::global)
                    fail(stages[i]->name(), "block " + std::to_string(l) + " was trained with " +
                                                block_attention_name(hp.block_attention[size_t(l)].kind) +
                                                " attention; a stage cannot replace it");
            }
            if (!handled) handled = trained_attention(m, s, l, view, ledger);
            if (!handled) {
                args.pace = pace(s.paces.attention);
                attention(ledger, args);
            } else if (block.attn16) {  // a stage's or the block's own attention wrote f32
                scale_to_bf16(args.out_bf16, view.out, n * c, 1.0f);
            }
        }
    }
    // No stage acting between the projection and the MLP: one region for
    // both, where both read and write xn in the same width (in bf16 with
    // quick_gelu the projection reads bf16 rows there and LN2 writes f32
    // ones, which would cover rows another thread is still reading).
    if (!signals.after_attention && block.attn16 == block.mlp16) {
        for_row_shares(batch * n, ledger, s.share_ledgers, pace(s.paces.project_mlp),
                       [&](int64_t r0, int64_t rows, Ledger* led) {
                           block.project(r0, rows, led);
                           block.mlp(r0, rows, led);
                       });
        return n;
    }
    for_row_shares(batch * n, ledger, s.share_ledgers, pace(s.paces.project),
                   [&](int64_t r0, int64_t rows, Ledger* led) { block.project(r0, rows, led); });
    if (signals.after_attention)
        n = run_after_attention_hooks(m, s, l, batch, n, s.qkv, stages, stage_count, want_cls, ledger);
    // x = y + MLP(LN2(y))
    for_row_shares(batch * n, ledger, s.share_ledgers, pace(s.paces.mlp),
                   [&](int64_t r0, int64_t rows, Ledger* led) { block.mlp(r0, rows, led); });
    return n;
}

}  // namespace

int64_t vit_encode(const VitModel& m, VitState& s, const float* pixels, int batch, Stage* const* stages,
                   int stage_count, Ledger* ledger, int blocks) {
    const VitHparams& hp = m.hp;
    if (batch < 1 || batch > s.max_batch) fail("vit", "batch " + std::to_string(batch) + " outside 1.." + std::to_string(s.max_batch));
    for (int b = 0; b < batch; ++b) s.tokens[size_t(b)].init(hp.prefix(), hp.grid_h(), hp.grid_w());
    if (s.record_trace) s.trace.assign(size_t(batch), {});

    patch_embed(m, s, pixels, batch, ledger);
    int64_t n = hp.tokens();
    if (m.norm_pre_w) layer_norm(s.x, s.x, m.norm_pre_w, m.norm_pre_b, batch * n, hp.dim, hp.norm_eps);

    if (blocks < 0 || blocks > hp.depth) fail("vit", "cannot run " + std::to_string(blocks) + " blocks");
    s.blocks_in_one_region = 0;
    // Blocks run in regions of whole blocks where they can (run_region), a
    // region ending at a block with after-attention hooks, whose MLP then
    // opens the next region; the others with hooks between their regions.
    bool mlp_pending = false;  // the MLP of block l - 1, after its hooks
    auto flush_mlp = [&](int l) {
        const BlockRows block(m, s, l - 1);
        for_row_shares(batch * n, ledger, s.share_ledgers, s.paced_shares ? &s.paces.mlp : nullptr,
                       [&](int64_t r0, int64_t rows, Ledger* led) { block.mlp(r0, rows, led); });
        mlp_pending = false;
    };
    for (int l = 0; l < blocks;) {
        RegionPlan plan;
        plan.first = plan.end = l;
        plan.mlp_first = mlp_pending;
        Signals signals = chain_signals(stages, stage_count, l);
        int threads = 0;
        InRegion join = block_in_region(m, s, l, batch, n, signals, ledger, threads);
        plan.threads = threads;
        while (join == InRegion::whole && threads == plan.threads) {
            s.tokens_entering_block[size_t(plan.end)] = int(n);
            if (++plan.end == blocks) break;
            signals = chain_signals(stages, stage_count, plan.end);
            join = block_in_region(m, s, plan.end, batch, n, signals, ledger, threads);
        }
        plan.hook_last = plan.end < blocks && join == InRegion::to_hook && threads == plan.threads;
        if (plan.end == l && !plan.hook_last) {  // block l cannot join a region
            if (mlp_pending) flush_mlp(l);
            s.tokens_entering_block[size_t(l)] = int(n);
            n = run_block_with_hooks(m, s, l, batch, n, stages, stage_count, signals, ledger);
            ++l;
            continue;
        }
        const float* qkv = run_region(m, s, plan, batch, n, stages, stage_count, ledger);
        s.blocks_in_one_region += plan.end - l + (plan.hook_last ? 1 : 0);
        mlp_pending = false;
        l = plan.end;
        if (plan.hook_last) {
            s.tokens_entering_block[size_t(l)] = int(n);
            n = run_after_attention_hooks(m, s, l, batch, n, qkv, stages, stage_count, signals.cls_attention, ledger);
            mlp_pending = true;
            ++l;
        }
    }
    if (mlp_pending) flush_mlp(blocks);
    return n;
}

int64_t vit_after_encoder(VitState& s, int batch, int64_t n, int dim, Stage* const* stages, int stage_count,
                          Ledger* ledger) {
    int64_t new_n = -1;
    for (int b = 0; b < batch; ++b) {
        EncoderView view{ledger, s.x + b * n * dim, dim, &s.tokens[size_t(b)]};
        for (int i = 0; i < stage_count; ++i) {
            Ledger::StageScope stage_scope(ledger, stages[i]->name());
            stages[i]->encoder_after_encoder(view);
        }
        // A stage may shorten the sequence here (pruning before a projector);
        // images of one batch must agree, and are packed at the new stride.
        const int64_t count = view.state->count;
        if (new_n >= 0 && count != new_n)
            fail("stage chain", "images of one batch left the encoder with different token counts");
        new_n = count;
        if (count != n && b > 0) std::memmove(s.x + b * count * dim, view.x, size_t(count * dim) * sizeof(float));
    }
    return new_n < 0 ? n : new_n;
}

void vit_forward(const VitModel& m, VitState& s, const float* pixels, int batch, Stage* const* stages,
                 int stage_count, Ledger* ledger, float* logits) {
    const VitHparams& hp = m.hp;
    const int64_t c = hp.dim;
    int64_t n = vit_encode(m, s, pixels, batch, stages, stage_count, ledger, hp.depth);
    if (m.norm_w) layer_norm(s.x, s.x, m.norm_w, m.norm_b, batch * n, c, hp.norm_eps);
    n = vit_after_encoder(s, batch, n, int(c), stages, stage_count, ledger);  // pooling sees the tokens left

    // Pool: the CLS token, or the mean of the patch tokens.
    for (int b = 0; b < batch; ++b) {
        const float* x = s.x + b * n * c;
        float* pooled = s.pooled + b * c;
        if (hp.global_pool == "token") {
            std::memcpy(pooled, x, size_t(c) * sizeof(float));
        } else {
            std::fill(pooled, pooled + c, 0.0f);
            for (int64_t t = hp.prefix(); t < n; ++t)
                for (int64_t i = 0; i < c; ++i) pooled[i] += x[t * c + i];
            for (int64_t i = 0; i < c; ++i) pooled[i] /= float(n - hp.prefix());
        }
    }
    if (m.fc_norm_w) layer_norm(s.pooled, s.pooled, m.fc_norm_w, m.fc_norm_b, batch, c, hp.norm_eps);
    if (m.head_w.data) {
        Ledger::ComponentScope scope(ledger, Component::head);
        linear_packed(ledger, logits, s.pooled, m.head_w, m.head_b, batch);
    }
}

}  // namespace tessera
