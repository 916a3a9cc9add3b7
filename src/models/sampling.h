// Next-token choice from logits: greedy, or seeded sampling with
// transformers' warper order (temperature, then top-k, then top-p).
#pragma once
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace tessera {

struct SamplingOptions {
    float temperature = 0.0f;  // 0: greedy (argmax)
    int top_k = 0;             // 0: off
    float top_p = 1.0f;        // 1: off
    uint64_t seed = 0;
};

class Sampler {
public:
    Sampler(const SamplingOptions& options, int64_t vocab);
    int32_t next(const float* logits);

private:
    SamplingOptions opt_;
    int64_t vocab_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> sorted_;  // sized once
};

// DAMRO's contrastive logits (METHODS.md 6): out = (1 + alpha) z - alpha z_o,
// and -inf wherever z_y < log(beta) + max z (the plausibility cut).
void contrastive_logits(const float* z, const float* z_o, int64_t vocab, float alpha, float beta, float* out);

// The k largest logits, best first (ties: lower id first).
std::vector<std::pair<int32_t, float>> top_logits(const float* logits, int64_t vocab, int k);

}  // namespace tessera
