// The LLaMA decoder's cache and the sampler.
#include <gtest/gtest.h>

#include <cmath>

#include "models/llava.h"
#include "models/sampling.h"
#include "test_support.h"

namespace tessera {
namespace {
using namespace test;

TEST(LlamaCache, ChunkedPrefillEqualsOneShot) {
    LlavaModel m;
    llava_load(m, source_path("tests/fixtures/llava/tiny-llava-gqa"), {.dtype = "f32", .load_tokenizer = false});
    const int64_t T = 23, d = m.cfg.text.hidden;
    std::vector<int32_t> ids(T), pos(T);
    for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = int32_t((i * 37 + 5) % 600), pos[size_t(i)] = int32_t(i);
    std::vector<float> embeds(static_cast<size_t>(T * d));
    llama_embed(m.text, ids.data(), T, embeds.data());

    LlamaState once, chunked;
    llama_state_init(once, m.text, T, T);
    llama_state_init(chunked, m.text, T, T);
    llama_forward(m.text, once, embeds.data(), pos.data(), T, nullptr);
    Ledger a, b, c;
    llama_forward(m.text, chunked, embeds.data(), pos.data(), 9, &a);
    llama_forward(m.text, chunked, embeds.data() + 9 * d, pos.data() + 9, 13, &b);
    llama_forward(m.text, chunked, embeds.data() + 22 * d, pos.data() + 22, 1, &c);
    for (int64_t v = 0; v < m.cfg.text.vocab; ++v) EXPECT_NEAR(once.logits[v], chunked.logits[v], 2e-5) << v;
    for (int64_t len : chunked.layer_len) EXPECT_EQ(len, T);
    // MACs: the same work in chunks as at once (causal pairs only, no padding).
    Ledger whole;
    LlamaState again;
    llama_state_init(again, m.text, T, T);
    llama_forward(m.text, again, embeds.data(), pos.data(), T, &whole);
    const uint64_t lm_head = uint64_t(d) * uint64_t(m.cfg.text.vocab);  // one logits row per call
    EXPECT_EQ(a.total() + b.total() + c.total(), whole.total() + 2 * lm_head);
    EXPECT_NE(error_of([&] { llama_forward(m.text, chunked, embeds.data(), pos.data(), 1, nullptr); })
                  .find("the context is full: 24 tokens exceed the cache of 23"),
              std::string::npos);
}

TEST(Sampler, GreedyAndDegenerateSettingsTakeTheArgmax) {
    const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 1.9f, 0.0f};
    EXPECT_EQ(Sampler({}, 5).next(logits.data()), 1);
    for (uint64_t seed = 0; seed < 20; ++seed) {
        EXPECT_EQ(Sampler({.temperature = 3.0f, .top_k = 1, .seed = seed}, 5).next(logits.data()), 1);
        EXPECT_EQ(Sampler({.temperature = 3.0f, .top_p = 1e-4f, .seed = seed}, 5).next(logits.data()), 1);
    }
}

TEST(Sampler, FollowsTheWarpedDistribution) {
    // p = softmax(logits / T) over the kept set.
    const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
    auto frequencies = [&](const SamplingOptions& o) {
        Sampler s(o, 4);
        std::vector<double> f(4, 0.0);
        const int n = 40000;
        for (int i = 0; i < n; ++i) f[size_t(s.next(logits.data()))] += 1.0 / n;
        return f;
    };
    const std::vector<double> plain = frequencies({.temperature = 1.0f, .seed = 1});
    const double want[] = {0.5, 0.3, 0.15, 0.05};
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(plain[size_t(i)], want[i], 0.01) << i;
    // top-k 2: renormalized over the two best.
    const std::vector<double> k2 = frequencies({.temperature = 1.0f, .top_k = 2, .seed = 2});
    EXPECT_NEAR(k2[0], 0.625, 0.01);
    EXPECT_EQ(k2[2] + k2[3], 0.0);
    // top-p 0.7: the smallest prefix reaching 0.7 is {0, 1}.
    const std::vector<double> p7 = frequencies({.temperature = 1.0f, .top_p = 0.7f, .seed = 3});
    EXPECT_NEAR(p7[1], 0.375, 0.01);
    EXPECT_EQ(p7[2] + p7[3], 0.0);
    // Temperature 2 flattens: p ~ sqrt(p).
    const std::vector<double> t2 = frequencies({.temperature = 2.0f, .seed = 4});
    const double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.15) + std::sqrt(0.05);
    EXPECT_NEAR(t2[3], std::sqrt(0.05) / z, 0.01);
}

TEST(Sampler, RejectsImpossibleSettings) {
    EXPECT_NE(error_of([] { Sampler({.temperature = -1.0f}, 4); }).find("temperature must be >= 0"), std::string::npos);
    EXPECT_NE(error_of([] { Sampler({.top_p = 0.0f}, 4); }).find("top-p must be in (0, 1]"), std::string::npos);
    EXPECT_NE(error_of([] { Sampler({.top_k = -2}, 4); }).find("top-k must be >= 0"), std::string::npos);
}

}  // namespace
}  // namespace tessera
