// LLaMA decoder (HF LlamaForCausalLM) with a KV cache:
//   h = embed(ids)                      (or given embeddings: image features)
//   for each layer:  h = h + O(attn(rope(Q(rms1(h))), rope(K(..)), V(..)))
//                    h = h + Down(silu(Gate(rms2(h))) * Up(rms2(h)))
//   logits = lm_head(rms(h))
// Grouped-query attention; each layer keeps its own cache length, so stages
// that drop tokens in some layers only leave the others intact.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "io/llava_config.h"
#include "kernels/gemm.h"
#include "models/weights.h"
#include "tessera/arena.h"
#include "tessera/stage.h"

namespace tessera {

// Projections are either fused (one product for q|k|v and one for gate|up:
// f32 copies, stacked at load) or separate (16-bit weights used in place
// from the mapped file: stacking them would copy gigabytes).
struct LlamaLayer {
    const float* attn_norm;     // [hidden]
    WeightRef qkv;              // [(heads + 2 kv_heads) head_dim, hidden] q | k | v rows; data null when separate
    WeightRef q, k, v;          // separate projections (when qkv.data is null)
    const float* qkv_bias;      // [(heads + 2 kv_heads) head_dim] or null
    WeightRef o;                // [hidden, heads head_dim]
    const float* o_bias;        // or null
    const float* mlp_norm;      // [hidden]
    WeightRef gate_up;          // [2 intermediate, hidden] gate | up rows; data null when separate
    WeightRef gate, up;         // separate (when gate_up.data is null)
    const float* gate_up_bias;  // [2 intermediate] or null
    WeightRef down;             // [hidden, intermediate]
    const float* down_bias;     // or null
};

struct LlamaModel {
    LlamaConfig cfg;
    WeightRef embed;                // [vocab, hidden]
    std::vector<LlamaLayer> layers;
    const float* norm;              // [hidden]
    WeightRef lm_head;              // [vocab, hidden]; the embedding when tied
    std::vector<float> inv_freq;    // [head_dim / 2], rope scaling applied
    float attention_scaling = 1.0f;

    int64_t q_width() const { return int64_t(cfg.heads) * cfg.head_dim; }
    int64_t kv_width() const { return int64_t(cfg.kv_heads) * cfg.head_dim; }
};

// Tensors under `prefix` (e.g. "model.language_model." or
// "language_model.model."); `head` names the lm_head weight. Matrices are
// held in `dtype`.
void llama_load(LlamaModel& model, WeightLoader& loader, const LlamaConfig& cfg, const std::string& prefix,
                const std::string& head, DType dtype, const std::string& where);

// Rotary frequencies for a config (default, linear, llama3), as HF computes them.
std::vector<float> llama_rope_frequencies(const LlamaConfig& cfg, float* attention_scaling);

struct LlamaState {
    int64_t capacity = 0;   // positions each layer's cache holds
    int64_t max_step = 0;   // tokens one forward call may bring
    Arena arena;
    float* k_cache;         // [layers, kv_heads, capacity, head_dim]
    float* v_cache;
    std::vector<int64_t> layer_len;  // tokens cached per layer
    float* x;               // [max_step, hidden] residual stream
    float* xn;              // [max_step, hidden]
    float* qkv;             // [max_step, q + 2 kv widths] (fused) or q | k | v blocks (separate)
    float* attn;            // [max_step, q width]
    float* mlp;             // [max_step, 2 intermediate]
    float* logits;          // [vocab] of the last token
    float* linear_scratch;
    float* attn_scratch;
    int32_t* positions;     // [max_step] this call's positions (rows leave with dropped tokens)
    int32_t* keep;          // [max_step] a stage's kept visual tokens
    float* last_query;      // [heads, capacity] the last prompt token's attention row, when a stage asks
    // From the last prefill: tokens and visual tokens entering each layer.
    std::vector<int64_t> prefill_tokens, prefill_visual;
    // Tests and analyses: sees the hidden states entering layer l (l <
    // layers) and, with l = layers, after the final norm. Null in runs.
    std::function<void(int layer, const float* hidden, int64_t tokens)> observe;
};

void llama_state_init(LlamaState& state, const LlamaModel& model, int64_t capacity, int64_t max_step);
DecoderShape llama_decoder_shape(const LlamaModel& model);

// The stages acting in one forward call and where the image sits in it.
struct DecoderRun {
    Stage* const* stages = nullptr;
    int stage_count = 0;
    bool prefill = false;                      // the call holds the whole prompt (cache empty)
    int64_t image_start = 0, image_count = 0;  // visual rows of this call's tokens
};
void llama_state_reset(LlamaState& state);  // empties every layer's cache

// Embedding rows of token ids into out [n, hidden].
void llama_embed(const LlamaModel& model, const int32_t* ids, int64_t n, float* out);

// Runs `tokens` embedded tokens (embeds [tokens, hidden]) at `positions`
// through every layer, appending to each layer's cache, and leaves the last
// token's logits in state.logits. Throws when the cache would overflow.
// Stages in `run` act at the decoder hooks (stage.h); a stage may drop
// visual tokens after a layer in prefill, so later layers cache fewer.
void llama_forward(const LlamaModel& model, LlamaState& state, const float* embeds, const int32_t* positions,
                   int64_t tokens, Ledger* ledger, const DecoderRun* run = nullptr);

}  // namespace tessera
