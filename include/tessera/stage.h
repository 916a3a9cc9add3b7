// The stage interface. A stage is one token-efficiency method: it declares
// the signals it needs and acts only at hook points the model calls. Models
// and stages never include each other; they meet here and in TokenState.
#pragma once
#include <string>
#include <vector>

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
    // encoder_after_attention has work at this block. It is called only at
    // blocks where some stage of the chain sets this; elsewhere the block
    // runs its projection and MLP as one parallel region.
    bool after_attention = false;
    // encoder_attention may compute this block's attention. It is called
    // only at blocks where some stage of the chain sets this; elsewhere the
    // block's own attention runs, and with no stage acting at all, the block
    // runs as one parallel region.
    bool attention = false;
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

// ---------------------------------------------------------------- decoder

// What a vision-language model's language decoder looks like to a stage.
struct DecoderShape {
    int layers = 0, heads = 0, kv_heads = 0, head_dim = 0, hidden = 0;
    std::string model_dir;  // where stages find their files for this model (routers, sink dimensions)
};

// Signals a stage asks the decoder to compute at a layer during prefill.
struct DecoderSignals {
    bool last_query_attention = false;  // post-softmax attention row of the last prompt token, per head
};

// Hooks 4 and 5: before and after decoder layer `layer`, in prefill (one
// call holding the whole prompt) and in each decoding step.
struct DecoderLayerView {
    int layer = 0;
    bool prefill = false;
    Ledger* ledger = nullptr;
    float* x = nullptr;       // [tokens, hidden] residual stream (input of the layer, or its output)
    int64_t tokens = 0;       // rows of x
    int64_t past = 0;         // tokens this layer had cached before this call
    int hidden = 0, heads = 0;
    // Visual rows of x: [image_start, image_start + image_count); 0 in
    // decoding steps and once the visual tokens have left the sequence.
    int64_t image_start = 0, image_count = 0;
    // After the layer, in prefill, when requested: [heads, past + tokens],
    // the last prompt token's attention over every key of this layer.
    const float* last_query_attention = nullptr;
    // After the layer, in prefill: a stage that keeps only some visual tokens
    // for the later layers writes their indices (ascending, into the image
    // span) to keep[0 .. kept) and sets kept (0 drops them all); -1 leaves
    // the sequence as it is. Text tokens keep their positions.
    int32_t* keep = nullptr;  // room for image_count entries
    int64_t kept = -1;
};

// Hook 6: one post-softmax row of decoder self-attention (layer, head,
// query) before it multiplies V. Called from worker threads, concurrently
// for different rows; the stage may rewrite the row in place.
struct AttentionRowView {
    int layer = 0, head = 0;
    bool prefill = false;
    int64_t query = 0;  // the query's index in this layer's cache
    float* probs = nullptr;
    int64_t keys = 0;   // probs[0 .. keys): keys 0 .. query of this layer's cache
};

// A second decoding stream to contrast against (DAMRO): the visual tokens it
// keeps, named by the (first) patch each covers, and the contrast's settings.
struct ContrastiveDecoding {
    std::vector<int32_t> visual_patches;  // ascending patch indices of the grid
    float alpha = 2.0f, beta = 0.1f;
};

// What a stage does, for the composition rules of a chain (stages_build):
// at most one stage of each kind that would otherwise fight over the same
// decision.
struct StageRoles {
    bool encoder = false;              // acts in the vision encoder (any hook)
    bool prunes_after_encoder = false; // chooses the visual tokens passed to the decoder
    bool decoder = false;              // needs a language decoder (image classifiers refuse it)
    bool drops_decoder_tokens = false; // removes visual tokens inside the decoder
    bool attention_rows = false;       // rewrites decoder attention probabilities
    bool contrastive = false;          // adds a second decoding stream
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

    virtual StageRoles roles() const { StageRoles r; r.encoder = true; return r; }

    // Vision-language models: true when the visual tokens a stage keeps
    // should enter the decoder at the positions they had in the full layout
    // (gaps where tokens were dropped) instead of contiguous ones.
    virtual bool keeps_original_positions() const { return false; }

    // Decoder stages. check_decoder throws tessera::Error naming the setting
    // when it is impossible for this decoder.
    virtual void check_decoder(const DecoderShape& shape) const {}
    virtual DecoderSignals decoder_signals(int layer) const { return {}; }
    virtual void decoder_layer_input(DecoderLayerView& view) {}
    virtual void decoder_after_layer(DecoderLayerView& view) {}
    // True when decoder_attention_row should see the rows of this layer. In
    // prefill the queries after the image are offered, and every query when
    // a stage of the chain asks for all rows (a stage must then skip the
    // rows it does not act on).
    virtual bool wants_attention_rows(int layer, bool prefill) const { return false; }
    virtual bool wants_all_prefill_rows() const { return false; }
    virtual void decoder_attention_row(const AttentionRowView& view) const {}
    // After the image is encoded: a second stream to contrast against, or null.
    virtual const ContrastiveDecoding* contrastive_decoding() const { return nullptr; }
    // Called once per request before the image is encoded (per-request state).
    virtual void begin_request() {}
};

}  // namespace tessera
