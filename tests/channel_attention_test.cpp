// DaViT channel-group attention against the formula of METHODS.md section 5,
// evaluated naively in double: per group M = softmax_row((k C_g^-1/2)^T v),
// O = q M^T; plus its MAC count.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/channel_attention.h"
#include "test_support.h"

namespace tessera {
namespace {

struct ChannelCase {
    int64_t tokens, channels, groups;
};

class ChannelAttentionTest : public ::testing::TestWithParam<ChannelCase> {};

TEST_P(ChannelAttentionTest, MatchesTheFormula) {
    const ChannelCase p = GetParam();
    const int64_t n = p.tokens, c = p.channels, g_count = p.groups, cg = c / g_count;
    auto qkv = test::random_values(size_t(n * 3 * c), 41, 1.5f);
    auto q = [&](int64_t t, int64_t ch) { return double(qkv[size_t(t * 3 * c + ch)]); };
    auto k = [&](int64_t t, int64_t ch) { return double(qkv[size_t(t * 3 * c + c + ch)]); };
    auto v = [&](int64_t t, int64_t ch) { return double(qkv[size_t(t * 3 * c + 2 * c + ch)]); };

    std::vector<double> ref(size_t(n * c));
    for (int64_t g = 0; g < g_count; ++g) {
        const int64_t o = g * cg;
        // M[i, j] = softmax over j of sum_t (k[t, i] / sqrt(C_g)) v[t, j]
        std::vector<double> m(size_t(cg * cg));
        for (int64_t i = 0; i < cg; ++i) {
            double most = -INFINITY;
            for (int64_t j = 0; j < cg; ++j) {
                double acc = 0;
                for (int64_t t = 0; t < n; ++t) acc += k(t, o + i) / std::sqrt(double(cg)) * v(t, o + j);
                m[size_t(i * cg + j)] = acc;
                most = std::max(most, acc);
            }
            double sum = 0;
            for (int64_t j = 0; j < cg; ++j) sum += m[size_t(i * cg + j)] = std::exp(m[size_t(i * cg + j)] - most);
            for (int64_t j = 0; j < cg; ++j) m[size_t(i * cg + j)] /= sum;
        }
        // O = q M^T: O[t, i] = sum_j q[t, j] M[i, j]
        for (int64_t t = 0; t < n; ++t)
            for (int64_t i = 0; i < cg; ++i) {
                double acc = 0;
                for (int64_t j = 0; j < cg; ++j) acc += q(t, o + j) * m[size_t(i * cg + j)];
                ref[size_t(t * c + o + i)] = acc;
            }
    }

    std::vector<float> out(size_t(n * c), -7.0f), scratch(size_t(channel_attention_scratch_floats(c, g_count)));
    Ledger ledger;
    channel_attention(&ledger, {qkv.data(), out.data(), n, c, g_count, scratch.data()});
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-4 * std::max(1.0, std::abs(ref[i]))) << i;
    EXPECT_EQ(ledger.total(), uint64_t(2 * g_count * n * cg * cg));
}

INSTANTIATE_TEST_SUITE_P(Shapes, ChannelAttentionTest,
                         ::testing::Values(ChannelCase{5, 8, 2},       // tiny
                                           ChannelCase{17, 32, 1},     // one group
                                           ChannelCase{49, 96, 3},     // DaViT-T stage 1: C_g = 32
                                           ChannelCase{197, 192, 6},   // a ViT-Tiny-sized sequence
                                           ChannelCase{3, 12, 12}));   // C_g = 1: M = [1]

TEST(ChannelAttention, SingleChannelGroupsCopyQ) {
    // With C_g = 1 the row softmax of a 1x1 map is 1, so O = q.
    const int64_t n = 4, c = 6;
    auto qkv = test::random_values(size_t(n * 3 * c), 3);
    std::vector<float> out(size_t(n * c)), scratch(size_t(channel_attention_scratch_floats(c, c)));
    channel_attention(nullptr, {qkv.data(), out.data(), n, c, c, scratch.data()});
    for (int64_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < c; ++i) EXPECT_FLOAT_EQ(out[size_t(t * c + i)], qkv[size_t(t * 3 * c + i)]);
}

}  // namespace
}  // namespace tessera
