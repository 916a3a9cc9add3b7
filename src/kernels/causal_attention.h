// Decoder self-attention over a KV cache, with grouped-query attention
// (HF LlamaAttention semantics). The cache holds each kv head's keys and
// values contiguously, [kv_heads, capacity, head_dim], so one head's keys
// are read as one stream. Queries are processed in blocks of rows whose
// scores stay within about 1 MiB per thread.
#pragma once
#include <cstdint>

#include "tessera/flops.h"

namespace tessera {

// Sees (and may rewrite) the post-softmax row of query t (t = 0 .. tokens-1
// of this call) in q head `head` before the value product; keys = past + t
// + 1. Called from worker threads, concurrently for different rows.
struct AttentionRowHook {
    void (*fn)(void* context, int64_t head, int64_t t, float* probs, int64_t keys) = nullptr;
    void* context = nullptr;
    int64_t first_row = 0;  // rows t < first_row are not offered
};

struct CausalAttentionArgs {
    const float* q = nullptr;  // [tokens, q_heads * head_dim], row stride q_stride (elements)
    int64_t q_stride = 0;
    const float* k_cache = nullptr;  // [kv_heads, capacity, head_dim]; positions [0, past + tokens) valid
    const float* v_cache = nullptr;  // same layout
    int64_t capacity = 0;
    float* out = nullptr;  // [tokens, q_heads * head_dim] contiguous
    int64_t tokens = 0, past = 0, q_heads = 0, kv_heads = 0, head_dim = 0;  // kv_heads divides q_heads
    float scale = 0.0f;                // usually head_dim^-1/2
    float* scratch = nullptr;          // causal_attention_scratch_floats(tokens, past) floats
    const float* key_bias = nullptr;   // [past + tokens] added to the logit of every key; may be null
    AttentionRowHook row_hook;         // optional
};

// Query rows per block for a call that sees past + tokens keys.
int64_t causal_attention_block_rows(int64_t tokens, int64_t past);
// One slice per OpenMP thread (threads_count() at the time of the call).
// Non-decreasing in tokens and past: sizing once for the largest call
// (e.g. tokens = capacity, past = 0) serves every smaller one.
int64_t causal_attention_scratch_floats(int64_t tokens, int64_t past);

// Query t (at position past + t) attends keys 0 ..= past + t; q head h reads
// kv head h / (q_heads / kv_heads). Adds 2 * q_heads * head_dim *
// sum_t (past + t + 1) MACs: the causal pairs only (the kernel computes up
// to 3 masked scores per row on the side, which are discarded, not counted).
void causal_attention(Ledger* ledger, const CausalAttentionArgs& args);

// Appends this call's keys and values to the cache: rows t < tokens of k and
// v ([tokens, kv_heads * head_dim], row stride kv_stride) go to position
// past + t of each kv head.
void kv_cache_write(float* k_cache, float* v_cache, int64_t capacity, const float* k, const float* v,
                    int64_t kv_stride, int64_t tokens, int64_t past, int64_t kv_heads, int64_t head_dim);

}  // namespace tessera
