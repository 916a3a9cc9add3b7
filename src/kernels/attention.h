// Multi-head self-attention over a fused qkv buffer. Each head's keys and
// values are packed once per call into the panel layout of packed_gemm.h;
// then per (head, block of 48 query rows): scores with the register-tile
// kernel, softmax in place, value product into the head's output columns.
// Scores exist for one block at a time (block x N per thread), never the
// full [heads, N, N] map. Optionally returns the post-softmax attention row
// of query 0 (the CLS row stages such as EViT and VTC-CLS read). Results do
// not depend on the thread count.
#pragma once
#include <cstdint>

#include "tessera/flops.h"

namespace tessera {

class ThreadPace;

struct AttentionArgs {
    const float* qkv = nullptr;  // [tokens, 3 * heads * head_dim]: q | k | v, heads contiguous in each
    float* out = nullptr;        // [tokens, heads * head_dim]
    int64_t tokens = 0, heads = 0, head_dim = 0;
    float scale = 0.0f;                 // usually head_dim^-1/2
    const float* key_bias = nullptr;    // [tokens] added to every logit (ToMe: log token size); may be null
    float* cls_probs = nullptr;         // [heads, tokens] receives softmax row of query 0; may be null
    float* scratch = nullptr;           // attention_scratch_floats(heads, tokens, head_dim, slots) floats
    int slots = 0;                      // threads the scratch was sized for (0: threads_count())
    // Run the two products through oneDNN's matmul, batched over heads for
    // blocks of query rows (keys, values and queries first copied into dense
    // per-head matrices), instead of the packed kernel: what a model whose
    // linear layers run on oneDNN (AVX-512/AMX CPUs) asks for. Same scratch.
    bool onednn = false;
    // With onednn: both products in bf16 (queries, keys, values and the
    // softmax's probabilities rounded to bf16 as they are copied or written;
    // scores, softmax and accumulation in f32): a bf16 run's attention on a
    // CPU with bf16 arithmetic.
    bool bf16 = false;
    // With onednn: the output rounded to bf16 and written here instead of to
    // out ([tokens, heads * head_dim]), for a bf16 projection to read.
    uint16_t* out_bf16 = nullptr;
    // With onednn: the fused form (kernels/fused_attention.h) where this
    // build and the shapes allow it, else oneDNN's products.
    bool fused = true;
    // With onednn: the threads' query rows follow their measured speeds
    // (kernels/row_shares.h) and this region's times teach it; may be null.
    ThreadPace* pace = nullptr;
};

// Query rows per work item.
int64_t attention_block_rows(int64_t heads, int64_t tokens);
// Packed keys and values of every head, plus queries and scores of one block
// per thread slot; or, if larger, what the oneDNN form needs (dense keys and
// values of every head, plus one block's queries, scores and outputs; in
// bf16 also the block's probabilities).
int64_t attention_scratch_floats(int64_t heads, int64_t tokens, int64_t head_dim, int slots);

// Adds 2 * heads * tokens^2 * head_dim MACs (scores and value product).
void attention(Ledger* ledger, const AttentionArgs& args);

// One thread's query rows [first, last) of attention(), for a caller already
// inside a parallel region whose threads take shares of the rows, with
// scratch slot `slot` (< args.slots). Every row's keys and values must be
// written before any thread starts. Only the fused form does this:
// attention_rows_available() says whether it runs these args. Adds
// 2 * heads * (last - first) * tokens * head_dim MACs.
bool attention_rows_available(const AttentionArgs& args);
void attention_rows(Ledger* ledger, const AttentionArgs& args, int slot, int64_t first, int64_t last);

}  // namespace tessera
