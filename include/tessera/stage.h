// The stage interface. A stage is one token-efficiency method: it declares
// the signals it needs and acts only at hook points the model calls. Models
// and stages never include each other; they meet here and in TokenState.
#pragma once
#include <string>

#include "tessera/flops.h"
#include "tessera/tokens.h"

namespace tessera {

// What the encoder looks like to a stage, for validating its settings.
struct EncoderShape {
    int depth = 0, heads = 0, dim = 0;
    int prefix = 0, grid_h = 0, grid_w = 0;
    int tokens() const { return prefix + grid_h * grid_w; }
};

// Signals a stage asks the model to compute at a block.
struct Signals {
    bool cls_attention = false;  // head-wise post-softmax attention row of token 0
};

// Hook 1, inside block `block`: the attention kernel. A stage that returns
// true from encoder_attention has computed `out` itself (e.g. a sparse
// routing) and must fill cls_probs when it is non-null.
struct AttentionView {
    int block = 0;
    Ledger* ledger = nullptr;
    const float* qkv = nullptr;  // [tokens, 3 * heads * head_dim]
    float* out = nullptr;        // [tokens, heads * head_dim]
    int tokens = 0, heads = 0, head_dim = 0;
    float scale = 0.0f;
    const float* key_bias = nullptr;  // [tokens] or null
    float* cls_probs = nullptr;       // [heads, tokens] or null
    const TokenState* state = nullptr;
};

// Hook 2, inside block `block`, between MHSA and FFN: x = x + Attn(LN1(x)).
// A stage may reorganize the sequence in place (fewer rows, stride dim) and
// must then call state.remap(). The FFN runs on the new sequence.
struct BlockView {
    int block = 0;
    Ledger* ledger = nullptr;
    float* x = nullptr;                    // [state.count, dim]
    int dim = 0, heads = 0;
    // [state.count, 3 * dim] of this block; null once an earlier stage in
    // this block has reorganized the tokens (its rows no longer match).
    const float* qkv = nullptr;
    // [heads, state.count] when requested, else null. It follows the tokens
    // through earlier stages' reorganizations in this block: a merged or
    // fused token's entry is the sum of its parts' attention.
    const float* cls_attention = nullptr;
    TokenState* state = nullptr;
    float* scratch = nullptr;              // scratch_floats floats for the stage's own use
    long scratch_floats = 0;
};

// Hook 3: after the encoder (after its final norm), before the head or projector.
struct EncoderView {
    Ledger* ledger = nullptr;
    float* x = nullptr;  // [state.count, dim]
    int dim = 0;
    TokenState* state = nullptr;
};

// For stages whose attention follows the patch grid: throws, naming the stage
// and block, when an earlier stage has already reorganized the tokens.
void stage_require_intact_grid(const AttentionView& view, const std::string& stage, const std::string& where);

class Stage {
public:
    virtual ~Stage() = default;
    virtual const std::string& name() const = 0;

    // Throws tessera::Error naming the setting when it is impossible for this encoder.
    virtual void check(const EncoderShape& shape) const {}
    virtual Signals signals(int block) const { return {}; }

    virtual bool encoder_attention(AttentionView& view) { return false; }
    virtual void encoder_after_attention(BlockView& view) {}
    virtual void encoder_after_encoder(EncoderView& view) {}

    // Vision-language models: true when the visual tokens a stage keeps
    // should enter the decoder at the positions they had in the full layout
    // (gaps where tokens were dropped) instead of contiguous ones.
    virtual bool keeps_original_positions() const { return false; }
};

}  // namespace tessera
