#include "stages/vtc_cls.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "tessera/error.h"

namespace tessera {

std::vector<int32_t> vtc_cls_select(const std::vector<double>& scores, int keep) {
    std::vector<int32_t> order(scores.size());
    std::iota(order.begin(), order.end(), 0);
    keep = std::min<int>(keep, int(order.size()));
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](int32_t a, int32_t b) {
        return scores[size_t(a)] > scores[size_t(b)] || (scores[size_t(a)] == scores[size_t(b)] && a < b);
    });
    order.resize(size_t(keep));
    std::sort(order.begin(), order.end());  // raster order for the decoder
    return order;
}

VtcClsStage::VtcClsStage(YamlMap& params) : params_(params) {
    keep_ = params.integer("keep", 64, 1, 1 << 20);
    start_layer_ = params.integer("start_layer", -1, -1, 255);
    const std::string positions = params.string("positions", "contiguous");
    if (positions != "contiguous" && positions != "original")
        params.error("positions", "expected contiguous or original, got '" + positions + "'");
    original_positions_ = positions == "original";
    params_ = params;
}

VtcClsStage::VtcClsStage(YamlMap& params, LastLayerOnly, std::string name)
    : name_(std::move(name)), params_(params), last_layer_only_(true) {
    keep_ = params.integer("keep", 64, 1, 1 << 20);
    const std::string positions = params.string("positions", "contiguous");
    if (positions != "contiguous" && positions != "original")
        params.error("positions", "expected contiguous or original, got '" + positions + "'");
    original_positions_ = positions == "original";
    params_ = params;
}

void VtcClsStage::check(const EncoderShape& shape) const {
    if (shape.prefix != 1)
        fail(params_.file(), "stage 'vtc_cls' ranks tokens by the CLS token's attention and needs exactly one prefix "
                             "token (a CLS token); this encoder has " + std::to_string(shape.prefix));
    // LLaVA-1.5: layers 16..22 of a 24-layer tower whose features come from
    // layer 22, i.e. two thirds of (blocks run + 1).
    start_ = last_layer_only_ ? shape.depth - 1 : start_layer_ >= 0 ? start_layer_ : (2 * (shape.depth + 1)) / 3;
    if (start_ >= shape.depth)
        params_.error("start_layer", "layer " + std::to_string(start_) + " is past the last block the tower runs (" +
                                         std::to_string(shape.depth - 1) + ")");
    if (keep_ > shape.grid_h * shape.grid_w)
        params_.error("keep", std::to_string(keep_) + " tokens is more than the tower's " +
                                  std::to_string(shape.grid_h * shape.grid_w) + " patches");
}

Signals VtcClsStage::signals(int block) const {
    Signals s;
    s.cls_attention = s.after_attention = block >= start_;
    return s;
}

void VtcClsStage::encoder_after_attention(BlockView& view) {
    if (view.block < start_) return;
    const TokenState& ts = *view.state;
    const int count = ts.count;
    if (!view.cls_attention) fail(name_, "block " + std::to_string(view.block) + ": no CLS attention row");
    if (view.block == start_) {
        scores_.assign(size_t(count - 1), 0.0);
    } else if (count != scored_count_) {
        // Another stage reorganized the tokens since the last block: carry
        // the sums (merged tokens add their parts' scores).
        if (ts.last_map_count != scored_count_)
            fail(name_, "block " + std::to_string(view.block) +
                                ": tokens were reorganized more than once since the last block; cannot carry scores");
        std::vector<double> carried(size_t(count - 1), 0.0);
        for (int t = 1; t < scored_count_; ++t) {
            const int32_t to = ts.last_map[size_t(t)];
            if (to >= 1) carried[size_t(to - 1)] += scores_[size_t(t - 1)];
        }
        scores_ = std::move(carried);
    }
    // s_j = mean_h A[h, 0, j], summed over the layers.
    for (int h = 0; h < view.heads; ++h) {
        const float* row = view.cls_attention + int64_t(h) * count;
        for (int j = 1; j < count; ++j) scores_[size_t(j - 1)] += double(row[j]) / view.heads;
    }
    scored_count_ = count;
}

void VtcClsStage::encoder_after_encoder(EncoderView& view) {
    TokenState& ts = *view.state;
    if (scored_count_ != ts.count) fail(name_, "the tokens changed after the last scored block");
    const int n = ts.count - 1;
    if (keep_ >= n) return;
    std::vector<int32_t> kept = vtc_cls_select(scores_, keep_);
    // Raster order of the original patches (tokens may have been reordered by an earlier stage).
    std::vector<int32_t> first_patch(size_t(n), 0);
    for (int t = 0; t < n; ++t) {
        const std::vector<int32_t> p = ts.patches_of(t + 1);
        first_patch[size_t(t)] = p.empty() ? 1 << 30 : *std::min_element(p.begin(), p.end());
    }
    std::sort(kept.begin(), kept.end(), [&](int32_t a, int32_t b) {
        return first_patch[size_t(a)] < first_patch[size_t(b)] || (first_patch[size_t(a)] == first_patch[size_t(b)] && a < b);
    });
    std::vector<int32_t> old_to_new(size_t(ts.count), -1);
    old_to_new[0] = 0;
    for (size_t i = 0; i < kept.size(); ++i) {
        const int32_t from = kept[i] + 1, to = int32_t(i) + 1;
        old_to_new[size_t(from)] = to;
        // kept is not ascending in token index when raster order differs, so copy through a staging row set.
    }
    std::vector<float> rows(kept.size() * size_t(view.dim));
    for (size_t i = 0; i < kept.size(); ++i)
        std::memcpy(rows.data() + i * size_t(view.dim), view.x + int64_t(kept[i] + 1) * view.dim,
                    size_t(view.dim) * sizeof(float));
    std::memcpy(view.x + view.dim, rows.data(), rows.size() * sizeof(float));
    ts.remap(old_to_new.data(), int(kept.size()) + 1);
    std::vector<double> kept_scores;
    for (int32_t k : kept) kept_scores.push_back(scores_[size_t(k)]);
    scores_ = std::move(kept_scores);
    scored_count_ = ts.count;
}

}  // namespace tessera
