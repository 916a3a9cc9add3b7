// EViT (Liang et al., "Not All Patches are What You Need", ICLR 2022): token
// reorganization. In chosen blocks, between MHSA and FFN, keep the patch
// tokens the CLS token attends to most and fuse the others into one token
// weighted by that attention (METHODS.md section 1; official evit.py,
// Block.forward and complement_idx).
//
//   pipelines:  - evit: {blocks: [3, 6, 9], keep_rate: 0.7, fuse: true, order: score}
//
// The math is the pure functions below; EvitStage only applies them to the
// block's rows and token state. Token 0 is the CLS token; the candidates are
// tokens 1..N-1 (a token fused in an earlier block is an ordinary candidate).
#pragma once
#include <cstdint>
#include <vector>

#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

// Order of the kept tokens in the new sequence.
enum class EvitOrder : uint8_t {
    score,   // descending score, ties to the lower index (official: torch.topk(sorted=True))
    raster,  // original order (what LVLM use needs: spatial order kept)
};

// Kept tokens among `candidates` = N - 1: math.ceil(keep_rate * (N - 1)),
// computed in double as Python does. At least 1 for keep_rate > 0.
int evit_keep_count(double keep_rate, int candidates);

// scores[j] = mean_h cls_attention[h, 1 + j] for j < count - 1: the head-mean
// CLS row of the block, CLS column excluded.
// cls_attention: [heads, count] post-softmax.
void evit_scores(float* scores, const float* cls_attention, int heads, int count);

// Splits n candidates into the k highest scores, kept[0..k) in `order`, and
// the others, dropped[0..n-k) ascending. Ties go to the lower index. Partial
// selection only (partial_sort / nth_element over `work`), the complement
// through `mask`. work: [n], mask: [n].
void evit_select(int32_t* kept, int32_t* dropped, const float* scores, int n, int k, EvitOrder order,
                 int32_t* work, uint8_t* mask);

// f = sum_i scores[dropped[i]] * y[dropped[i], :], raw weights (not
// renormalized), summed in the order of `dropped`. y: [n, dim], f: [dim].
// Costs n_dropped * dim MACs (a [1, n_dropped] x [n_dropped, dim] product).
void evit_fuse(float* f, const float* y, int64_t dim, const float* scores, const int32_t* dropped, int n_dropped);

// The reorganization as TokenState::remap's map over the count = 1 + n old
// tokens: CLS stays at 0, candidate kept[i] goes to 1 + i, dropped candidates
// go to the fused token 1 + k (fuse) or are dropped (-1). Returns the new
// count: 1 + k (+ 1 when fusing and n_dropped > 0).
int evit_token_map(int32_t* old_to_new, int n, const int32_t* kept, int k, const int32_t* dropped, int n_dropped,
                   bool fuse);

class EvitStage : public Stage {
public:
    // Reads blocks (default [3, 6, 9]), keep_rate (0.7), fuse (true), order (score).
    explicit EvitStage(YamlMap& params);
    const std::string& name() const override { return name_; }

    // Rejects blocks past the encoder's depth and encoders without a CLS
    // token; sizes the index buffers for the encoder's token count.
    void check(const EncoderShape& shape) const override;
    // In a vision-language model the decoder reads the layout from token
    // order: the kept tokens stay in raster order (order: score is refused).
    void check_decoder(const DecoderShape& shape) const override;
    Signals signals(int block) const override;

    // In a chosen block: y = x + Attn(LN1(x)) is in view.x; rewrites it as
    // [CLS, kept..., f]. When k >= N - 1 nothing is dropped and no fused
    // token is added (keep_rate 1, or a sequence already too short).
    void encoder_after_attention(BlockView& view) override;

    const std::vector<int>& blocks() const { return blocks_; }
    double keep_rate() const { return keep_rate_; }
    bool fuse() const { return fuse_; }
    EvitOrder order() const { return order_; }

private:
    bool acts_at(int block) const;

    std::string name_ = "evit";
    YamlMap params_;  // for check()'s errors, which name the key
    std::vector<int> blocks_;
    double keep_rate_ = 0.7;
    bool fuse_ = true;
    mutable EvitOrder order_ = EvitOrder::score;
    bool order_given_ = false;

    // Index buffers sized by check() for the encoder's token count; the
    // forward pass only lowers the count it uses.
    mutable std::vector<int32_t> work_, kept_, dropped_, old_to_new_;
    mutable std::vector<uint8_t> mask_;
};

}  // namespace tessera
