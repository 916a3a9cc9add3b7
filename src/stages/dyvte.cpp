#include "stages/dyvte.h"

#include <algorithm>
#include <filesystem>

#include "io/files.h"
#include "io/safetensors.h"
#include "kernels/gemm.h"
#include "tessera/error.h"

namespace tessera {

void dyvte_router_logits(Ledger* ledger, const float* f, const float* w1, const float* w2, int64_t width,
                         int64_t hidden_width, float* hidden, float* logits) {
    linear(ledger, hidden, f, w1, nullptr, 1, width, hidden_width, Epilogue::gelu_erf);
    linear(ledger, logits, hidden, w2, nullptr, 1, hidden_width, 2);
}

void dyvte_features(const float* x, int64_t tokens, int64_t c, int64_t image_end, float* f) {
    std::fill(f, f + 2 * c, 0.0f);
    const int64_t count = tokens - 1 - image_end;
    for (int64_t t = image_end; t < tokens - 1; ++t)
        for (int64_t i = 0; i < c; ++i) f[i] += x[t * c + i];
    if (count > 0)
        for (int64_t i = 0; i < c; ++i) f[i] /= float(count);
    std::copy(x + (tokens - 1) * c, x + tokens * c, f + c);
}

DyvteStage::DyvteStage(YamlMap& params) : params_(params) {
    if (params.has("exit_layer") && params.has("router"))
        params.error("exit_layer", "give either a router or a fixed exit_layer, not both");
    fixed_exit_ = params.integer("exit_layer", -1, 0, 1 << 20);
    if (fixed_exit_ < 0) router_file_ = params.string("router", "dyvte_router.safetensors");
}

void DyvteStage::check_decoder(const DecoderShape& shape) const {
    layers_ = shape.layers;
    if (fixed_exit_ >= 0) {
        if (fixed_exit_ > shape.layers - 2)
            params_.error("exit_layer", "must be at most " + std::to_string(shape.layers - 2) +
                                            " (an exit after the last of the decoder's " +
                                            std::to_string(shape.layers) + " layers changes nothing)");
        return;
    }
    const std::filesystem::path given(router_file_);
    const std::string path = given.is_absolute() ? router_file_ : shape.model_dir + "/" + router_file_;
    if (!path_exists(path))
        params_.error("router", "no router file '" + path + "' (train one with tools/train_dyvte.py, or give " +
                                    "exit_layer for the training-free fixed exit)");
    SafeTensors file(path);
    const TensorInfo* w1 = file.find("w1");
    const TensorInfo* w2 = file.find("w2");
    if (!w1 || !w2 || w1->shape.size() != 2 || w2->shape.size() != 2)
        fail(path, "a DyVTE router holds w1 [hidden, 2 C] and w2 [2, hidden]");
    width_ = 2 * int64_t(shape.hidden), hidden_width_ = w1->shape[0];
    w1_.resize(size_t(hidden_width_ * width_));
    w2_.resize(size_t(2 * hidden_width_));
    // read_f32 checks the shapes against this decoder: C = hidden size.
    file.read_f32("w1", {hidden_width_, width_}, w1_.data());
    file.read_f32("w2", {2, hidden_width_}, w2_.data());
    f_.resize(size_t(width_));
    hidden_.resize(size_t(hidden_width_));
}

void DyvteStage::decoder_after_layer(DecoderLayerView& view) {
    if (!view.prefill || exit_layer_ >= 0 || view.image_count == 0 || view.layer >= layers_ - 1) return;
    bool exit = view.layer == fixed_exit_;
    if (fixed_exit_ < 0) {
        dyvte_features(view.x, view.tokens, view.hidden, view.image_start + view.image_count, f_.data());
        float logits[2];
        dyvte_router_logits(view.ledger, f_.data(), w1_.data(), w2_.data(), width_, hidden_width_, hidden_.data(),
                            logits);
        exit = logits[1] > logits[0];
    }
    if (!exit) return;
    exit_layer_ = view.layer;
    view.kept = 0;  // every visual token leaves
}

}  // namespace tessera
