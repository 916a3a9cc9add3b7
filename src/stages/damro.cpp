#include "stages/damro.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "tessera/error.h"

namespace tessera {

void damro_outliers(Ledger* ledger, const float* qkv, int64_t tokens, int64_t c, int prefix, int k, float* p,
                    std::vector<int32_t>& outliers) {
    // P = softmax(q_CLS K^T C^-1/2): one row, K read in place from qkv.
    GemmDesc d;
    d.m = 1, d.k = c, d.n = tokens;
    d.a_stride[1] = c, d.a_stride[2] = 1;
    d.b_stride[1] = 1, d.b_stride[2] = 3 * c;
    d.c_stride[1] = tokens, d.c_stride[2] = 1;
    d.alpha = 1.0f / std::sqrt(float(c));
    gemm(ledger, d, qkv, qkv + c, nullptr, p);
    softmax_row(p, tokens, nullptr);
    std::vector<int32_t> order(static_cast<size_t>(tokens - prefix));
    std::iota(order.begin(), order.end(), prefix);
    const int64_t keep = std::min<int64_t>(k, int64_t(order.size()));
    std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                      [p](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    outliers.assign(order.begin(), order.begin() + keep);
    std::sort(outliers.begin(), outliers.end());
}

DamroStage::DamroStage(YamlMap& params) : params_(params) {
    k_ = params.integer("k", k_, 1, 1 << 20);
    contrast_.alpha = float(params.number("alpha", 2.0));
    contrast_.beta = float(params.number("beta", 0.1));
    if (!(contrast_.alpha >= 0.0f)) params.error("alpha", "must be at least 0");
    if (!(contrast_.beta > 0.0f && contrast_.beta <= 1.0f)) params.error("beta", "must be in (0, 1]");
}

void DamroStage::check(const EncoderShape& shape) const {
    if (shape.prefix < 1) fail(params_.file(), "damro: the encoder has no CLS token to score outliers with");
    if (k_ > shape.grid_h * shape.grid_w)
        params_.error("k", "must be at most the " + std::to_string(shape.grid_h * shape.grid_w) + " patch tokens");
    feature_block_ = shape.depth - 1;  // a LLaVA tower runs up to its feature layer
}

void DamroStage::encoder_after_attention(BlockView& view) {
    if (view.block != feature_block_) return;
    if (!view.qkv) fail(name_, "an earlier stage reorganized the tokens in the feature block; put damro first");
    const TokenState& ts = *view.state;
    p_.resize(size_t(ts.count));
    damro_outliers(view.ledger, view.qkv, ts.count, view.dim, ts.prefix, k_, p_.data(), tokens_);
    // Outliers by the first patch each token covers.
    contrast_.visual_patches.clear();
    for (int32_t t : tokens_) {
        const std::vector<int32_t> patches = ts.patches_of(t);
        if (!patches.empty()) contrast_.visual_patches.push_back(*std::min_element(patches.begin(), patches.end()));
    }
    std::sort(contrast_.visual_patches.begin(), contrast_.visual_patches.end());
    found_ = true;
}

}  // namespace tessera
