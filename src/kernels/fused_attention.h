// The f32 encoder attention as one pass per tile of query rows, on AVX-512:
// scores in registers against keys transposed once per call, softmax, and
// the value product read straight from the fused qkv buffer into the head's
// output columns. Against the oneDNN form (keys, values and queries copied
// into dense per-head matrices, two batched oneDNN products per block of
// rows, head outputs scattered) it saves the copies and the calls' fixed
// costs, which is what EViT's pruned sequences (72-140 tokens) paid for.
#pragma once
#include <cstdint>

#include "kernels/attention.h"

namespace tessera {

// Whether the fused form runs these shapes in this build: AVX-512 code
// (with bf16: AVX512-BF16 code), head_dim a multiple of 16 up to 64, at least
// 16 tokens.
bool attention_fused_available(int64_t tokens, int64_t head_dim, bool bf16 = false);

// Scratch it needs: every head's keys transposed, plus one tile's queries,
// scores and reciprocals per thread slot.
int64_t attention_fused_scratch_floats(int64_t heads, int64_t tokens, int64_t head_dim, int slots);

// AttentionArgs as for attention(), with the same meanings: bf16 (both
// products on bf16 operands, as the oneDNN bf16 form rounds them), out or
// out_bf16, cls_probs, key_bias, slots and pace. Counts no MACs.
// Each query row's result is computed by one thread in a fixed order: the
// same on any thread count or split.
void attention_fused(const AttentionArgs& p);

// One thread's part of it, for a caller that is already inside a parallel
// region: the query rows [first, last) of every head, in scratch slot `slot`
// (< p.slots). Every query row's keys and values must be written before any
// thread starts. Counts no MACs either.
void attention_fused_rows(const AttentionArgs& p, int slot, int64_t first, int64_t last);

}  // namespace tessera
