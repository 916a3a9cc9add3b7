// Public API: offline analyses of a vision-language model that stages use.
//
//   tessera::SinkAnalysis a = tessera::analyze_sinks({.model = "path/to/llava", .images = {...}});
//   // a.dims: the decoder's massive-activation dimensions (VAR's D_sink)
#pragma once
#include <string>
#include <vector>

namespace tessera {

struct SinkAnalysisOptions {
    std::string model;                 // LLaVA folder ("" : the demo model)
    std::vector<std::string> images;
    std::string prompt = "Describe the image.";
    float tau = 20.0f;                 // VAR's sink threshold on |x_d| / rms(x)
    int first_layer = 2;               // layers whose input is scanned: first_layer .. L-1
    int threads = 0;
};

struct SinkDimension {
    int dim = 0;
    float max_ratio = 0.0f;      // largest |x_d| / rms(x) over every scanned token
    int64_t tokens_over_tau = 0; // (layer, token) pairs where this dimension alone exceeds tau
};

struct SinkAnalysis {
    std::vector<int> dims;                 // dimensions whose ratio exceeds tau somewhere (VAR's D_sink)
    std::vector<SinkDimension> strongest;  // the 10 largest ratios, largest first
    int64_t tokens_scanned = 0;            // (layer, token) pairs
    int hidden = 0, layers = 0;
};

// Prefills each image with the prompt and measures, on the input hidden
// state of decoder layers first_layer .. L-1, every dimension's largest
// RMS-normalized magnitude (METHODS.md section 7).
SinkAnalysis analyze_sinks(const SinkAnalysisOptions& options);

}  // namespace tessera
