// DaViT's channel-group attention (METHODS.md section 5). From a fused qkv
// buffer take three C-wide parts q | k | v, each viewed as G groups of
// [N, C_g] with C_g = C / G. Per group, in the official code's naming:
//   M = softmax_row((k * C_g^-1/2)^T v)   [C_g, C_g], softmax over each row
//   O = q M^T                             [N, C_g]
// so the scaled first factor of the channel affinity is the second third of
// qkv, the other factor the third third, and the first third is what gets
// mixed. Cost is linear in N: 2 * N * C * C_g MACs.
#pragma once
#include <cstdint>

#include "tessera/flops.h"

namespace tessera {

struct ChannelAttentionArgs {
    const float* qkv = nullptr;  // [tokens, 3 * channels]: q | k | v
    float* out = nullptr;        // [tokens, channels]
    int64_t tokens = 0, channels = 0, groups = 0;  // groups must divide channels
    float* scratch = nullptr;    // channel_attention_scratch_floats(channels, groups) floats
};

// The G channel maps M: channels * channels / groups floats.
int64_t channel_attention_scratch_floats(int64_t channels, int64_t groups);

// Adds groups * tokens * C_g^2 MACs for the maps M and as many for O.
void channel_attention(Ledger* ledger, const ChannelAttentionArgs& args);

}  // namespace tessera
