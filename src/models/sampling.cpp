#include "models/sampling.h"

#include <algorithm>
#include <limits>
#include <cmath>

#include "tessera/error.h"

namespace tessera {

Sampler::Sampler(const SamplingOptions& options, int64_t vocab) : opt_(options), vocab_(vocab), rng_(options.seed) {
    if (!(opt_.temperature >= 0.0f) || !std::isfinite(opt_.temperature))
        fail("sampling", "temperature must be >= 0");
    if (opt_.top_k < 0) fail("sampling", "top-k must be >= 0");
    if (!(opt_.top_p > 0.0f && opt_.top_p <= 1.0f)) fail("sampling", "top-p must be in (0, 1]");
    if (opt_.temperature > 0.0f) sorted_.resize(size_t(vocab));
}

int32_t Sampler::next(const float* logits) {
    if (opt_.temperature == 0.0f) return int32_t(std::max_element(logits, logits + vocab_) - logits);
    for (int64_t i = 0; i < vocab_; ++i) sorted_[size_t(i)] = {logits[i] / opt_.temperature, int32_t(i)};
    auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    int64_t keep = vocab_;
    if (opt_.top_k > 0 && opt_.top_k < vocab_) {
        keep = opt_.top_k;
        std::partial_sort(sorted_.begin(), sorted_.begin() + keep, sorted_.end(), better);
    } else {
        std::sort(sorted_.begin(), sorted_.end(), better);
    }
    // Probabilities of the kept candidates (best first).
    const double top = sorted_[0].first;
    double sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += std::exp(double(sorted_[size_t(i)].first) - top);
    if (opt_.top_p < 1.0f) {
        // Smallest prefix whose probability reaches top_p (at least one token).
        double cum = 0;
        int64_t n = 0;
        while (n < keep) {
            cum += std::exp(double(sorted_[size_t(n)].first) - top) / sum;
            ++n;
            if (cum >= double(opt_.top_p)) break;
        }
        keep = n;
        sum = 0;
        for (int64_t i = 0; i < keep; ++i) sum += std::exp(double(sorted_[size_t(i)].first) - top);
    }
    const double u = std::uniform_real_distribution<double>(0.0, sum)(rng_);
    double acc = 0;
    for (int64_t i = 0; i < keep; ++i) {
        acc += std::exp(double(sorted_[size_t(i)].first) - top);
        if (u < acc) return sorted_[size_t(i)].second;
    }
    return sorted_[size_t(keep - 1)].second;
}

std::vector<std::pair<int32_t, float>> top_logits(const float* logits, int64_t vocab, int k) {
    std::vector<int32_t> ids(static_cast<size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i) ids[size_t(i)] = int32_t(i);
    k = int(std::min<int64_t>(k, vocab));
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    std::vector<std::pair<int32_t, float>> out;
    for (int i = 0; i < k; ++i) out.emplace_back(ids[size_t(i)], logits[ids[size_t(i)]]);
    return out;
}

void contrastive_logits(const float* z, const float* z_o, int64_t vocab, float alpha, float beta, float* out) {
    const float cut = std::log(beta) + *std::max_element(z, z + vocab);
    for (int64_t y = 0; y < vocab; ++y)
        out[y] = z[y] < cut ? -std::numeric_limits<float>::infinity() : (1.0f + alpha) * z[y] - alpha * z_o[y];
}

}  // namespace tessera
