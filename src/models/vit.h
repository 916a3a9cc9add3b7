// timm VisionTransformer / DeiT classifier (CLS token, pre-LN blocks), with
// the block structure open to stages:
//   x = patch_embed(img) ; x = [cls, x] + pos_embed ; x = norm_pre(x)
//   for each block:   y = x + Attn(LN1(x))          <- hook: attention kernel
//                     (stages)                       <- hook: after attention
//                     x = y + MLP(LN2(y))
//   x = norm(x)                                      <- hook: after encoder
//   logits = head(fc_norm(pool(x)))
#pragma once
#include <string>
#include <vector>

#include "io/timm_config.h"
#include "kernels/grid_attention.h"
#include "kernels/packed_gemm.h"
#include "kernels/row_shares.h"
#include "tessera/arena.h"
#include "tessera/stage.h"

namespace tessera {

// The attention a block was trained with (config.json
// model_args.block_attention; global when absent). Routing and window blocks
// keep the CLS token global (it attends to every token and is a key of every
// region / window); in channel blocks it is one of the tokens.
struct BlockAttention {
    enum class Kind { global, routing, window, channel };
    Kind kind = Kind::global;
    int regions = 7, topk = 16;  // routing: S x S regions, key regions per query region
    bool channel_scale = false;  // routing: softmax scale C^-1/2 (BiFormer's released models), else d^-1/2
    int lce_kernel = 0;          // routing: k of the depthwise k x k conv of V added to the output (0: none)
    int window = 7;              // window: w x w patches
    int groups = 1;              // channel: G groups of C / G channels
};
const char* block_attention_name(BlockAttention::Kind kind);

constexpr int max_vit_depth = 256;

// One variant = one row of dimensions and flags.
struct VitHparams {
    int img_h = 224, img_w = 224, patch = 16;
    int dim = 192, depth = 12, heads = 3, mlp_hidden = 768;
    bool qkv_bias = true, class_token = true, pre_norm = false;
    float norm_eps = 1e-6f;
    std::string act = "gelu";  // MLP activation: "gelu" (exact erf) | "quick_gelu" (CLIP)
    int num_classes = 1000;
    std::string global_pool = "token";  // "token" | "avg"
    std::vector<BlockAttention> block_attention;  // [depth]

    int grid_h() const { return img_h / patch; }
    int grid_w() const { return img_w / patch; }
    int prefix() const { return class_token ? 1 : 0; }
    int tokens() const { return prefix() + grid_h() * grid_w(); }
    int head_dim() const { return dim / heads; }
};

// Dimensions from the architecture name (timm's registry rows), overridden by
// model_args. Throws naming the config file for unknown or inconsistent values.
VitHparams vit_hparams_from_timm(const TimmConfig& cfg);

struct VitBlock {
    const float* norm1_w;  // [dim]
    const float* norm1_b;  // [dim]
    PackedMatrix qkv_w;    // [3 dim, dim], packed for linear_packed (as every matrix here)
    const float* qkv_b;    // [3 dim] or null
    PackedMatrix proj_w;   // [dim, dim]
    const float* proj_b;   // [dim]
    const float* ls1;      // [dim] layer scale or null
    const float* norm2_w;  // [dim]
    const float* norm2_b;  // [dim]
    PackedMatrix fc1_w;    // [mlp_hidden, dim]
    const float* fc1_b;    // [mlp_hidden]
    PackedMatrix fc2_w;    // [dim, mlp_hidden]
    const float* fc2_b;    // [dim]
    const float* ls2;      // [dim] layer scale or null
    const float* lce_w;    // [dim, k * k] routing blocks with LCE (attn.lepe), else null
    const float* lce_b;    // [dim]
};

struct VitModel {
    std::string dir;
    std::string architecture;
    VitHparams hp;
    PreprocessConfig preprocess;
    int64_t parameters = 0;
    int64_t tensor_count = 0;

    DType matrix_dtype = DType::f32;  // of the packed matrices: f32, or bf16 (a --dtype bf16 run)
    Arena weights;               // every tensor, converted to f32 (matrices packed, in matrix_dtype)
    PackedMatrix patch_w;        // [dim, 3 * patch * patch] (conv weight, flattened c, ky, kx)
    const float* patch_b;        // [dim]
    const float* cls_token;      // [dim] or null
    const float* pos_embed;      // [tokens, dim]
    const float* norm_pre_w;     // [dim] or null
    const float* norm_pre_b;
    std::vector<VitBlock> blocks;
    const float* norm_w;         // [dim] or null (avg pool with fc_norm)
    const float* norm_b;
    const float* fc_norm_w;      // [dim] or null
    const float* fc_norm_b;
    PackedMatrix head_w;         // [num_classes, dim]; data null when num_classes is 0 (features)
    const float* head_b;         // [num_classes]

    EncoderShape encoder_shape() const;
};

// Loads DIR/config.json and DIR/model.safetensors; every tensor's shape is
// checked against the config and every tensor in the file must be used.
// Weight matrices are packed in `matrices` (f32 or bf16: rounded to nearest,
// products still accumulate in f32); vectors (biases, norms, tokens) stay f32.
void vit_load(VitModel& model, const std::string& dir, DType matrices = DType::f32);

// The matrix dtype a `dtype` option asks of a ViT: "", "auto" and "f32" give
// f32, "bf16" bf16; anything else fails naming `where` (the option's source).
DType vit_matrix_dtype(const std::string& option, const std::string& where);

// How a loaded model's linear layers run on this CPU: "onednn" (weights in
// oneDNN's reordered layout: AVX-512/AMX hosts, or TESSERA_LINEAR=onednn),
// "onednn-f32" (bf16 weights run as f32 products there, where bf16 products
// do not pay: onednn_bf16_products_pay) or "packed" (the AVX2 panels).
// Benchmarks print it beside their figures.
const char* vit_linear_path(const VitModel& model);

// A stage's reorganization of one image, kept for visualizations.
struct TokenTrace {
    int block = 0;
    std::string stage;
    int count = 0;                     // tokens after the change
    std::vector<int32_t> patch_owner;  // token covering each patch, -1 dropped
    std::vector<TokenKind> kind;       // [count]
};

// Activations for up to max_batch images, sized once for the full token count.
struct VitState {
    int max_batch = 0;
    Arena arena;
    float* x;         // [batch, tokens, dim] residual stream
    float* xn;        // [batch, tokens, dim] normalized input of a sub-layer
    float* qkv;       // [batch, tokens, 3 dim]
    // Every other block's qkv where blocks run as one region
    // (vit_encode): [qkv_spare_rows, 3 dim], rows enough for the batches a
    // region takes.
    float* qkv_spare;
    int64_t qkv_spare_rows = 0;
    float* attn;      // [batch, tokens, dim] attention output before proj
    float* hidden;    // [batch, tokens, mlp_hidden]
    float* patches;   // [batch, grid, 3 patch^2]
    float* scores;    // attention scratch, sized for attention_slots threads
    int attention_slots = 1;
    float* key_bias;  // [tokens]
    float* cls_probs; // [batch, heads, tokens]
    float* cls_remap; // [tokens] scratch for carrying the CLS row through a reorganization
    float* pooled;    // [batch, dim]
    float* channel_maps;  // channel blocks' C_g x C_g maps, or null
    float* stage_scratch;
    long stage_scratch_floats = 0;
    std::vector<RoutedAttention> routed;      // [depth], set up for routing blocks
    std::vector<WindowedAttention> windowed;  // [depth], set up for window blocks
    std::vector<TokenState> tokens;           // per image
    std::vector<int> tokens_entering_block;   // [depth], from the last forward
    std::vector<Ledger> share_ledgers;        // one per thread beyond the first (kernels/row_shares.h)
    // Rows split among the threads by their measured speeds instead of
    // equally (ThreadPace, kernels/row_shares.h; TESSERA_SHARES=paced at
    // set-up), with the speeds kept per kind of region of a block: a thread
    // may be late in one kind (e.g. waking up after serial work) and not in
    // another. Paced shares run each block as separate regions.
    bool paced_shares = false;
    struct {
        ThreadPace qkv, attention, project_mlp, project, mlp;
    } paces;
    int blocks_in_one_region = 0;             // of the last forward: blocks run as whole-block regions
    // Tests: the last thread of a whole-block region sleeps this long before
    // each of its steps, so that the others run ahead as far as the region
    // lets them (a missing barrier or a shared qkv buffer then shows).
    int region_lag_us = 0;
    bool record_trace = false;                // off: the forward pass allocates nothing
    std::vector<std::vector<TokenTrace>> trace;  // per image, from the last forward
};

void vit_state_init(VitState& state, const VitModel& model, int max_batch);

// Embeds the images and runs the first `blocks` blocks, stages acting at
// their hooks in list order. The residual stream is left in state.x (no
// final norm); returns the token count per image.
int64_t vit_encode(const VitModel& model, VitState& state, const float* pixels, int batch, Stage* const* stages,
                   int stage_count, Ledger* ledger, int blocks);

// The stages' encoder_after_encoder hook on each image's n tokens in state.x;
// returns the token count after it (a stage may prune here).
int64_t vit_after_encoder(VitState& state, int batch, int64_t n, int dim, Stage* const* stages, int stage_count,
                       Ledger* ledger);

// pixels: [batch, 3, img_h, img_w] preprocessed; logits: [batch, num_classes].
// All blocks, final norm, pooling and head.
void vit_forward(const VitModel& model, VitState& state, const float* pixels, int batch, Stage* const* stages,
                 int stage_count, Ledger* ledger, float* logits);

}  // namespace tessera
