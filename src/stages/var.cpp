#include "stages/var.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/files.h"
#include "io/timm_config.h"
#include "tessera/error.h"

namespace tessera {

float var_sink_score(const float* x, int64_t c, const std::vector<int>& dims) {
    double sq = 0.0;
    for (int64_t i = 0; i < c; ++i) sq += double(x[i]) * x[i];
    const double rms = std::sqrt(sq / double(c) + 1e-6);
    double phi = 0.0;
    for (int d : dims) phi = std::max(phi, std::abs(double(x[d]) / rms));
    return float(phi);
}

bool var_redistribute_row(float* probs, int64_t keys, int64_t image_start, int64_t image_count, const uint8_t* sink,
                          int64_t sink_count, const VarRowSettings& s) {
    const int64_t image_end = std::min(keys, image_start + image_count);
    double s_img = 0.0, visual_sinks = 0.0, sinks = 0.0;
    for (int64_t j = image_start; j < image_end; ++j) {
        s_img += probs[j];
        if (j < sink_count && sink[j]) visual_sinks += probs[j];
    }
    const double portion = visual_sinks / (s_img + 1e-6);
    if (!(portion <= s.rho && s_img >= s.min_image_attention)) return false;
    const double visual_rest = s_img - visual_sinks;  // mass of the visual non-sink keys
    if (!(visual_rest > 0.0)) return false;          // nowhere to move the mass
    const int64_t marked = std::min(keys, sink_count);
    for (int64_t j = 0; j < marked; ++j)
        if (sink[j]) sinks += probs[j];
    if (sinks == 0.0) return false;
    const double freed = (1.0 - s.p) * sinks;
    const double gain = freed / visual_rest;
    for (int64_t j = 0; j < marked; ++j)
        if (sink[j]) probs[j] = float(s.p * probs[j]);
    for (int64_t j = image_start; j < image_end; ++j)
        if (!(j < sink_count && sink[j])) probs[j] = float(probs[j] * (1.0 + gain));
    return true;
}

VarStage::VarStage(YamlMap& params) : params_(params) {
    dims_given_ = params.has("sink_dims");
    dims_ = params.integers("sink_dims", {}, 0, 1 << 24);
    tau_ = float(params.number("tau", tau_));
    row_.rho = float(params.number("rho", row_.rho));
    row_.p = float(params.number("p", row_.p));
    row_.min_image_attention = float(params.number("min_image_attention", row_.min_image_attention));
    first_layer_ = params.integer("first_layer", first_layer_, 0, 1 << 20);
    if (!(tau_ > 0.0f)) params.error("tau", "must be positive");
    if (!(row_.rho >= 0.0f && row_.rho <= 1.0f)) params.error("rho", "must be in [0, 1]");
    if (!(row_.p >= 0.0f && row_.p <= 1.0f)) params.error("p", "the share of sink attention kept must be in [0, 1]");
    if (!(row_.min_image_attention >= 0.0f && row_.min_image_attention <= 1.0f))
        params.error("min_image_attention", "must be in [0, 1]");
}

void VarStage::check_decoder(const DecoderShape& shape) const {
    layers_ = shape.layers;
    if (first_layer_ > shape.layers - 2)
        params_.error("first_layer", "must be at most " + std::to_string(shape.layers - 2) + " for a decoder of " +
                                         std::to_string(shape.layers) + " layers (the last layer is skipped)");
    if (!dims_given_) {
        const std::string path = shape.model_dir + "/var_sinks.json";
        if (!path_exists(path))
            params_.error("sink_dims", "not given and no '" + path + "': run `tessera analyze sinks --model " +
                                           shape.model_dir + " IMAGES...` to find the decoder's sink dimensions");
        const nlohmann::json j = json_read_file(path);
        if (!j.contains("dims") || !j["dims"].is_array()) fail(path, "key 'dims': expected a list of dimensions");
        dims_.clear();
        for (const auto& d : j["dims"]) {
            if (!d.is_number_integer()) fail(path, "key 'dims': expected integers");
            dims_.push_back(d.get<int>());
        }
    }
    for (int d : dims_)
        if (d >= shape.hidden)
            params_.error("sink_dims", "dimension " + std::to_string(d) + " is outside the decoder's hidden size " +
                                           std::to_string(shape.hidden));
}

void VarStage::begin_request() {
    sink_.assign(size_t(layers_), {});
    image_start_.assign(size_t(layers_), 0);
    image_count_.assign(size_t(layers_), 0);
    visual_sinks_.assign(size_t(layers_), 0);
    text_sinks_.assign(size_t(layers_), 0);
    rows_seen_ = 0, rows_selected_ = 0;
}

void VarStage::decoder_layer_input(DecoderLayerView& view) {
    if (!view.prefill || view.layer < first_layer_ || view.layer > layers_ - 2 || dims_.empty()) return;
    if (view.past != 0) fail(name_, "needs the whole prompt in one prefill call");
    const size_t l = size_t(view.layer);
    sink_[l].assign(size_t(view.tokens), 0);
    image_start_[l] = view.image_start, image_count_[l] = view.image_count;
    for (int64_t t = 0; t < view.tokens; ++t) {
        if (var_sink_score(view.x + t * view.hidden, view.hidden, dims_) <= tau_) continue;
        sink_[l][size_t(t)] = 1;
        const bool visual = t >= view.image_start && t < view.image_start + view.image_count;
        ++(visual ? visual_sinks_ : text_sinks_)[l];
    }
}

bool VarStage::wants_attention_rows(int layer, bool prefill) const {
    return layer >= first_layer_ && layer <= layers_ - 2 && size_t(layer) < visual_sinks_.size() &&
           visual_sinks_[size_t(layer)] > 0;
}

void VarStage::decoder_attention_row(const AttentionRowView& view) const {
    const size_t l = size_t(view.layer);
    if (view.prefill && view.query < image_start_[l] + image_count_[l]) return;  // VAR acts on queries after the image
    rows_seen_.fetch_add(1, std::memory_order_relaxed);
    if (var_redistribute_row(view.probs, view.keys, image_start_[l], image_count_[l], sink_[l].data(),
                             int64_t(sink_[l].size()), row_))
        rows_selected_.fetch_add(1, std::memory_order_relaxed);
}

VarStage::Stats VarStage::stats() const {
    return {visual_sinks_, text_sinks_, rows_seen_.load(), rows_selected_.load()};
}

}  // namespace tessera
