// Multi-head attention in which queries come in groups and each group
// attends only to its own list of key rows: BiFormer's routed regions,
// DaViT's windows, a global CLS row. Keys and values are read in place
// through the index lists; nothing is copied per group (BiFormer's official
// gather copies K/V k times over and runs out of memory on large inputs).
#pragma once
#include <cstdint>
#include <vector>

#include "tessera/flops.h"

namespace tessera {

// Groups in compressed form: group g's queries are
// queries[query_start[g] .. query_start[g + 1]) and its keys are
// keys[key_start[g] .. key_start[g + 1]). Query sets must not overlap.
struct AttentionGroups {
    std::vector<int32_t> query_start, queries;  // [groups + 1], [queries in all groups]
    std::vector<int32_t> key_start, keys;       // [groups + 1], [keys in all groups]
    int64_t groups() const { return int64_t(query_start.size()) - 1; }
};

struct GatheredAttentionArgs {
    const float* qkv = nullptr;  // [tokens, 3 * heads * head_dim]: q | k | v, heads contiguous in each
    float* out = nullptr;        // [tokens, heads * head_dim]; rows of queries in no group are not written
    int64_t tokens = 0, heads = 0, head_dim = 0;
    float scale = 0.0f;
    const float* key_bias = nullptr;  // [tokens] added to the logit of every key; may be null
    float* cls_probs = nullptr;       // [heads, tokens] softmax row of query 0, 0 for keys it does not see; may be null
    const int32_t* query_start = nullptr;
    const int32_t* queries = nullptr;
    const int32_t* key_start = nullptr;
    const int32_t* keys = nullptr;
    int64_t groups = 0;
    float* scratch = nullptr;  // slots * slot_floats floats
    int slots = 1;             // parallel workers the scratch serves
    int64_t slot_floats = 0;   // at least max over groups of |queries| * |keys|
};

// The scratch one worker needs: the score tile of the largest group.
int64_t gathered_attention_slot_floats(const AttentionGroups& groups);

// Groups plus per-worker scratch, sized once before the forward pass.
struct GatheredAttentionPlan {
    AttentionGroups groups;
    std::vector<float> scratch;
    int slots = 0;
    int64_t slot_floats = 0;

    // One slot of slot_floats per OpenMP worker.
    void size_scratch(int64_t floats_per_slot);
    // Points args' group and scratch fields at this plan.
    void bind(GatheredAttentionArgs& args);
};

// Adds 2 * heads * head_dim * sum_g |queries_g| * |keys_g| MACs (scores and
// value products over the listed keys only).
void gathered_attention(Ledger* ledger, const GatheredAttentionArgs& args);

// Splits a grid_h x grid_w patch grid (tokens prefix + raster index) into
// cells_y x cells_x rectangular cells. Cell (cy, cx) covers rows
// [cy*grid_h/cells_y, (cy+1)*grid_h/cells_y) (integer division) and the same
// for columns, so cell sides differ by at most one when the division is
// uneven. Cells are numbered in raster order; tokens within a cell too.
// start: [cells + 1], tokens: [grid_h * grid_w].
void grid_cells(int prefix, int grid_h, int grid_w, int cells_y, int cells_x, std::vector<int32_t>& start,
                std::vector<int32_t>& tokens);

}  // namespace tessera
