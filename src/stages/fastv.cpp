#include "stages/fastv.h"

#include <algorithm>
#include <numeric>

#include "tessera/error.h"

namespace tessera {

void fastv_select(const float* attention, int heads, int64_t keys, int64_t image_start, int64_t image_count,
                  int64_t keep, int32_t* out) {
    std::vector<double> score(static_cast<size_t>(image_count), 0.0);
    for (int h = 0; h < heads; ++h)
        for (int64_t j = 0; j < image_count; ++j) score[size_t(j)] += attention[h * keys + image_start + j];
    std::vector<int32_t> order(static_cast<size_t>(image_count));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](int32_t a, int32_t b) {
        return score[size_t(a)] > score[size_t(b)] || (score[size_t(a)] == score[size_t(b)] && a < b);
    });
    std::sort(order.begin(), order.begin() + keep);
    std::copy(order.begin(), order.begin() + keep, out);
}

FastvStage::FastvStage(YamlMap& params) : params_(params) {
    layer_ = params.integer("layer", layer_, 1, 1 << 20);
    ratio_ = params.number("ratio", ratio_);
    if (!(ratio_ >= 0.0 && ratio_ < 1.0)) params.error("ratio", "the share of visual tokens dropped must be in [0, 1)");
}

void FastvStage::check_decoder(const DecoderShape& shape) const {
    if (layer_ > shape.layers - 1)
        params_.error("layer", "must be in 1.." + std::to_string(shape.layers - 1) + " for a decoder of " +
                                   std::to_string(shape.layers) + " layers, got " + std::to_string(layer_));
}

DecoderSignals FastvStage::decoder_signals(int layer) const {
    DecoderSignals s;
    s.last_query_attention = layer == layer_ - 1;
    return s;
}

void FastvStage::decoder_after_layer(DecoderLayerView& view) {
    if (!view.prefill || view.layer != layer_ - 1 || view.image_count == 0) return;
    if (!view.last_query_attention) fail(name_, "the decoder did not provide the last query's attention");
    const int64_t keep = int64_t(double(view.image_count) * (1.0 - ratio_));
    fastv_select(view.last_query_attention, view.heads, view.past + view.tokens, view.image_start, view.image_count,
                 keep, view.keep);
    view.kept = keep;
}

}  // namespace tessera
