// ToMe, token merging (Bolya et al., ICLR 2023; METHODS.md "Peers"): between
// MHSA and FFN of a block, bipartite soft matching on the head-mean keys
// merges r tokens into their most similar partners with size-weighted
// averages; later blocks add log(size) to the attention logits.
//
//   - tome: {r: 8}                          every block merges 8 tokens
//   - tome: {r: 8, blocks: [0, 1, 2]}       only these blocks merge
//   - tome: {schedule: [16, 16, 8, ...]}    one r per block (0 skips a block)
//     proportional_attention: true          (default, as ToMe off the shelf)
//
// The math is three pure functions (mean keys -> matching plan -> weighted
// merge), each mirroring a step of the official bipartite_soft_matching /
// merge_wavg; the stage only applies them to the token state.
#pragma once
#include <cstdint>
#include <vector>

#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

// Buffers for one matching and merge over up to max_tokens tokens; sized once.
struct TomeWork {
    int max_tokens = 0, dim = 0, head_dim = 0;
    std::vector<float> metric;      // [max_tokens, head_dim] mean keys
    std::vector<float> unit;        // [max_tokens, head_dim] unit rows: A (even tokens), then B (odd)
    std::vector<float> scores;      // [ceil(t/2), floor(t/2)] cosine similarity of A rows to B rows
    std::vector<float> node_max;    // [ceil(t/2)] best similarity of each A token
    std::vector<int32_t> node_idx;  // [ceil(t/2)] its B partner
    std::vector<int32_t> edge;      // [ceil(t/2)] A tokens, most similar first
    std::vector<int32_t> old_to_new;  // [max_tokens] the plan
    std::vector<float> merged;      // [max_tokens, dim] the new sequence before it is copied back
    std::vector<float> size_sum;    // [max_tokens]
};
void tome_work_init(TomeWork& work, int max_tokens, int dim, int head_dim);

// One bipartite soft matching: A = tokens 0, 2, 4, ... and B = 1, 3, 5, ...
// (so CLS, token 0, is in A). old_to_new[t] is the new index of token t: the
// unmerged A tokens come first (ascending when there is a class token, else
// most similar first, as the official code leaves them), then every B token in
// order; a merged A token maps to its B partner's new index.
struct TomePlan {
    int tokens = 0;     // t before the merge
    int r = 0;          // A tokens merged, after the guard r <= (t - protected) / 2
    int new_count = 0;  // t - r
    const int32_t* old_to_new = nullptr;  // [tokens], points into TomeWork
};

// metric[t, :] = mean over heads of k[t, h, :], from a fused qkv buffer
// [tokens, 3 * heads * head_dim] (q | k | v, heads contiguous in each).
// ToMe: `return x, k.mean(1)`.
void tome_mean_keys(float* metric, const float* qkv, int tokens, int heads, int head_dim);

// Plans the merge of r tokens from work.metric [tokens, head_dim]. class_token protects token 0: its similarities are -inf, so it is
// never merged, and it stays first. Ties go to the lower index. Adds the
// similarity product, ceil(t/2) * floor(t/2) * head_dim MACs, to the ledger.
TomePlan tome_match(TomeWork& work, int tokens, int r, bool class_token, Ledger* ledger);

// out[n, :] = sum of x[t, :] * size[t] over the tokens t mapped to n, divided
// by the sum of their sizes (ToMe's merge_wavg). out must not alias x;
// size_sum [new_count] receives the sums.
void tome_merge(float* out, float* size_sum, const float* x, const float* size, const int32_t* old_to_new,
                int tokens, int new_count, int dim);

class TomeStage : public Stage {
public:
    explicit TomeStage(YamlMap& params);
    const std::string& name() const override { return name_; }
    void check(const EncoderShape& shape) const override;
    Signals signals(int block) const override {
        Signals s;
        s.after_attention = r_at(block) > 0;
        return s;
    }
    void encoder_after_attention(BlockView& view) override;

    // Tokens merged at a block as configured (before the guard).
    int r_at(int block) const;

private:
    std::string name_ = "tome";
    YamlMap params_;             // kept to name keys in check()
    int r_ = 0;                  // with r:, merged at each merging block
    std::vector<int> schedule_;  // with schedule:, one r per block
    std::vector<int> blocks_;    // with r:, the merging blocks (empty: all)
    bool proportional_attention_ = true;
    mutable TomeWork work_;      // sized by check() (or by the first merge when check() was not called)
};

}  // namespace tessera
