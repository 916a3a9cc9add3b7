// Multi-head self-attention over a fused qkv buffer, processed in blocks of
// query rows so the full [heads, N, N] map never has to exist for long
// sequences. Optionally returns the post-softmax attention row of query 0
// (the CLS row stages such as EViT and VTC-CLS read).
#pragma once
#include <cstdint>

#include "tessera/flops.h"

namespace tessera {

struct AttentionArgs {
    const float* qkv = nullptr;  // [tokens, 3 * heads * head_dim]: q | k | v, heads contiguous in each
    float* out = nullptr;        // [tokens, heads * head_dim]
    int64_t tokens = 0, heads = 0, head_dim = 0;
    float scale = 0.0f;                 // usually head_dim^-1/2
    const float* key_bias = nullptr;    // [tokens] added to every logit (ToMe: log token size); may be null
    float* cls_probs = nullptr;         // [heads, tokens] receives softmax row of query 0; may be null
    float* scratch = nullptr;           // attention_scratch_floats(heads, tokens) floats
};

// Query rows per block: the block's scores stay within about 1 MiB.
int64_t attention_block_rows(int64_t heads, int64_t tokens);
int64_t attention_scratch_floats(int64_t heads, int64_t tokens);

// Adds 2 * heads * tokens^2 * head_dim MACs (scores and value product).
void attention(Ledger* ledger, const AttentionArgs& args);

}  // namespace tessera
