// biformer_routing: the routing plan (region means, affinity, top-k with
// ties), the routed attention against a dense softmax attention masked to the
// keys the definition allows (double precision), the stage inside vit_forward
// (dense when every region is routed; analytic MACs), and its errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "models/vit.h"
#include "pipeline/config.h"
#include "stages/biformer_routing.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

using test::error_of;

// Writes a pipeline with the given stage list and builds it for `shape`.
std::vector<std::unique_ptr<Stage>> build(const std::string& stages_yaml, const EncoderShape& shape,
                                          std::string* file = nullptr) {
    std::string f = test::write_file(test::temp_dir() + "/pipeline.yaml", "stages:\n" + stages_yaml);
    if (file) *file = f;
    return stages_build(pipeline_read(f).stages, shape);
}

// The error of building a stage list, the pipeline file's path shown as FILE.
std::string build_error(const std::string& stages_yaml, const EncoderShape& shape) {
    std::string f;
    std::string e = error_of([&] { build(stages_yaml, shape, &f); });
    return e.rfind(f, 0) == 0 ? "FILE" + e.substr(f.size()) : e;
}

// ---- the reference, written from the definition

// Region (ry, rx) of a grid side split into s parts: the part whose
// [floor(r*side/s), floor((r+1)*side/s)) range holds the coordinate.
int part_of(int coord, int side, int s) {
    for (int r = 0; r < s; ++r)
        if (coord >= r * side / s && coord < (r + 1) * side / s) return r;
    return -1;
}

// For each query region, its routed key regions by the definition: means of
// the full-width q and k over the region, affinity Q_r K_r^T, top-k with ties
// to the lower index (double precision).
std::vector<std::vector<int>> reference_routes(const std::vector<float>& qkv, int prefix, int gh, int gw, int c,
                                               int s, int topk) {
    const int regions = s * s;
    std::vector<double> qm(size_t(regions * c), 0.0), km(size_t(regions * c), 0.0);
    std::vector<int> count(size_t(regions), 0);
    for (int y = 0; y < gh; ++y)
        for (int x = 0; x < gw; ++x) {
            const int r = part_of(y, gh, s) * s + part_of(x, gw, s);
            const float* t = qkv.data() + size_t(prefix + y * gw + x) * 3 * c;
            for (int i = 0; i < c; ++i) qm[size_t(r * c + i)] += t[i], km[size_t(r * c + i)] += t[c + i];
            ++count[size_t(r)];
        }
    std::vector<std::vector<int>> routes(static_cast<size_t>(regions));
    for (int r = 0; r < regions; ++r) {
        std::vector<double> a(static_cast<size_t>(regions));
        for (int j = 0; j < regions; ++j) {
            double acc = 0;
            for (int i = 0; i < c; ++i) acc += qm[size_t(r * c + i)] / count[size_t(r)] * km[size_t(j * c + i)] / count[size_t(j)];
            a[size_t(j)] = acc;
        }
        std::vector<int> order(static_cast<size_t>(regions));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return a[size_t(x)] > a[size_t(y)]; });
        routes[size_t(r)].assign(order.begin(), order.begin() + topk);
    }
    return routes;
}

using test::masked_attention;

// ---- the routing plan

TEST(BiformerRouting, TopkKeepsLargestAffinitiesTiesToLowerIndex) {
    // Row 0: its own region (0) is not forced in; rows 1 and 2 are ties.
    const std::vector<float> a = {1, 3, 3, 2,   //
                                  5, 5, 5, 5,   //
                                  -1, 0, 0, -1, //
                                  0, 1, 2, 9};
    std::vector<int32_t> plan(8), order(4);
    routing_topk(a.data(), 4, 2, plan.data(), order.data());
    EXPECT_EQ(plan, (std::vector<int32_t>{1, 2, 0, 1, 1, 2, 3, 2}));
    plan.resize(12);
    routing_topk(a.data(), 4, 3, plan.data(), order.data());
    EXPECT_EQ(plan, (std::vector<int32_t>{1, 2, 3, 0, 1, 2, 1, 2, 0, 3, 2, 1}));
    plan.resize(4);
    routing_topk(a.data(), 4, 1, plan.data(), order.data());
    EXPECT_EQ(plan, (std::vector<int32_t>{1, 0, 1, 3}));
}

TEST(BiformerRouting, GridCellsSplitEvenAndUnevenGrids) {
    std::vector<int32_t> start, tokens;
    grid_cells(1, 4, 4, 2, 2, start, tokens);  // CLS + 4x4, 2x2 regions
    EXPECT_EQ(start, (std::vector<int32_t>{0, 4, 8, 12, 16}));
    EXPECT_EQ(tokens, (std::vector<int32_t>{1, 2, 5, 6, 3, 4, 7, 8, 9, 10, 13, 14, 11, 12, 15, 16}));
    grid_cells(0, 5, 5, 2, 2, start, tokens);  // rows and columns split 2 + 3
    EXPECT_EQ(start, (std::vector<int32_t>{0, 4, 10, 16, 25}));
    EXPECT_EQ(std::vector<int32_t>(tokens.begin(), tokens.begin() + 10), (std::vector<int32_t>{0, 1, 5, 6, 2, 3, 4, 7, 8, 9}));
    EXPECT_EQ(std::vector<int32_t>(tokens.begin() + 10, tokens.begin() + 16), (std::vector<int32_t>{10, 11, 15, 16, 20, 21}));
}

TEST(BiformerRouting, RegionMeansAndAffinityMatchTheDefinition) {
    const int prefix = 1, gh = 6, gw = 4, s = 2, c = 12, n = prefix + gh * gw;
    auto qkv = test::random_values(size_t(n * 3 * c), 11);
    std::vector<int32_t> start, tokens;
    grid_cells(prefix, gh, gw, s, s, start, tokens);
    std::vector<float> q_r(size_t(s * s * c)), k_r(q_r.size()), a_r(size_t(s * s * s * s));
    routing_region_means(qkv.data(), c, start.data(), tokens.data(), s * s, q_r.data(), k_r.data());
    Ledger ledger;
    routing_affinity(&ledger, q_r.data(), k_r.data(), s * s, c, a_r.data());
    EXPECT_EQ(ledger.total(), uint64_t(s * s * s * s * c));
    for (int r = 0; r < s * s; ++r)
        for (int j = 0; j < s * s; ++j) {
            // Region r = (r / s, r % s) covers rows 3 (r/s) .. +3, columns 2 (r%s) .. +2.
            auto mean = [&](int region, int offset, int i) {
                double acc = 0;
                for (int y = 3 * (region / s); y < 3 * (region / s) + 3; ++y)
                    for (int x = 2 * (region % s); x < 2 * (region % s) + 2; ++x)
                        acc += qkv[size_t((prefix + y * gw + x) * 3 * c + offset + i)];
                return acc / 6;
            };
            double ref = 0;
            for (int i = 0; i < c; ++i) ref += mean(r, 0, i) * mean(j, c, i);
            EXPECT_NEAR(a_r[size_t(r * s * s + j)], ref, 1e-5) << r << "," << j;
        }
}

// ---- routed attention against the masked dense reference

struct RoutedCase {
    int prefix, gh, gw, heads, head_dim, regions, topk;
    std::string scale;
    bool key_bias;
};

class BiformerAttentionTest : public ::testing::TestWithParam<RoutedCase> {};

TEST_P(BiformerAttentionTest, MatchesMaskedDenseAttention) {
    const RoutedCase p = GetParam();
    const int n = p.prefix + p.gh * p.gw, c = p.heads * p.head_dim;
    const EncoderShape shape{2, p.heads, c, p.prefix, p.gh, p.gw};
    auto stages = build("  - biformer_routing: {blocks: [1], regions: " + std::to_string(p.regions) +
                            ", topk: " + std::to_string(p.topk) + ", scale: " + p.scale + "}\n",
                        shape);
    auto* stage = dynamic_cast<BiformerRoutingStage*>(stages[0].get());
    ASSERT_NE(stage, nullptr);

    auto qkv = test::random_values(size_t(n * 3 * c), 21 + uint32_t(p.gh * p.topk), 2.0f);
    auto bias = test::random_values(size_t(n), 5, 0.5f);
    TokenState ts;
    ts.init(p.prefix, p.gh, p.gw);
    std::vector<float> out(size_t(n * c), -7.0f), cls(size_t(p.heads * n), -7.0f);
    AttentionView view;
    view.block = 1, view.state = &ts, view.qkv = qkv.data(), view.out = out.data();
    view.tokens = n, view.heads = p.heads, view.head_dim = p.head_dim;
    view.scale = 1.0f / std::sqrt(float(p.head_dim));
    view.key_bias = p.key_bias ? bias.data() : nullptr;
    view.cls_probs = cls.data();
    Ledger ledger;
    view.ledger = &ledger;
    view.block = 0;
    EXPECT_FALSE(stage->encoder_attention(view));  // block 0 is not routed
    EXPECT_EQ(ledger.total(), 0u);
    view.block = 1;
    ASSERT_TRUE(stage->encoder_attention(view));

    // The plan the stage used is the definition's plan.
    auto routes = reference_routes(qkv, p.prefix, p.gh, p.gw, c, p.regions, p.topk);
    const std::vector<int32_t>& plan = stage->last_plan();
    for (int r = 0; r < p.regions * p.regions; ++r)
        EXPECT_EQ(std::vector<int32_t>(plan.begin() + r * p.topk, plan.begin() + (r + 1) * p.topk),
                  std::vector<int32_t>(routes[size_t(r)].begin(), routes[size_t(r)].end()))
            << "region " << r;

    auto region_of = [&](int token) {
        const int patch = token - p.prefix;
        return part_of(patch / p.gw, p.gh, p.regions) * p.regions + part_of(patch % p.gw, p.gw, p.regions);
    };
    auto allowed = [&](int i, int j) {
        if (i < p.prefix || j < p.prefix) return true;  // CLS is global and always a key
        const auto& r = routes[size_t(region_of(i))];
        return std::find(r.begin(), r.end(), region_of(j)) != r.end();
    };
    const double scale = p.scale == "channel" ? 1.0 / std::sqrt(double(c)) : 1.0 / std::sqrt(double(p.head_dim));
    std::vector<double> ref, ref_cls;
    masked_attention(qkv, n, p.heads, p.head_dim, scale, view.key_bias, allowed, ref, ref_cls);
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << "token " << i / c << " channel " << i % c;
    for (size_t i = 0; i < ref_cls.size(); ++i) ASSERT_NEAR(cls[i], ref_cls[i], 2e-6) << "cls prob " << i;

    // MACs: the affinity, then scores and values over the allowed keys only.
    uint64_t pairs = 0;
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) pairs += allowed(i, j);
    const uint64_t regions = uint64_t(p.regions * p.regions);
    EXPECT_EQ(ledger.total(), regions * regions * c + 2 * pairs * c);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BiformerAttentionTest,
    ::testing::Values(RoutedCase{1, 4, 4, 2, 16, 2, 1, "head", false},    // 2x2 regions of 4 tokens
                      RoutedCase{1, 4, 4, 2, 16, 2, 2, "head", true},     // with key bias (ToMe sizes)
                      RoutedCase{1, 6, 6, 2, 8, 3, 4, "channel", true},   // BiFormer's C^-1/2 quirk
                      RoutedCase{1, 6, 6, 2, 8, 2, 1, "head", false},     // 3x3 regions of 9 tokens
                      RoutedCase{1, 5, 5, 2, 16, 2, 2, "head", true},     // uneven regions: sides 2 and 3
                      RoutedCase{1, 4, 6, 3, 6, 2, 3, "head", false},     // non-square grid, head_dim 6
                      RoutedCase{0, 4, 4, 2, 16, 2, 2, "head", false},    // no CLS: query 0 is a patch
                      RoutedCase{2, 4, 4, 2, 16, 4, 16, "head", false},   // every region routed, 2 prefix tokens
                      RoutedCase{1, 14, 14, 3, 64, 7, 4, "head", true})); // ViT-Tiny at 224: the parallel path

// ---- inside vit_forward

struct TinyModel {
    VitModel model;
    VitState state;
    explicit TinyModel(test::TinyVit spec = {}) {
        std::string dir = test::temp_dir() + "/tiny";
        test::write_tiny_vit(dir, spec);
        vit_load(model, dir);
        vit_state_init(state, model, 1);
    }
    std::vector<float> forward(const std::vector<std::unique_ptr<Stage>>& stages, Ledger* ledger) {
        std::vector<Stage*> ptrs;
        for (const auto& s : stages) ptrs.push_back(s.get());
        auto pixels = test::random_values(3 * 32 * 32, 8);
        std::vector<float> logits(10);
        vit_forward(model, state, pixels.data(), 1, ptrs.data(), int(ptrs.size()), ledger, logits.data());
        return logits;
    }
};

TEST(BiformerRouting, EveryRegionRoutedEqualsDenseAttention) {
    TinyModel m;  // 4x4 grid, dim 32, 2 heads, depth 3
    Ledger dense_ledger, routed_ledger;
    auto dense = m.forward({}, &dense_ledger);
    auto routed = m.forward(build("  - biformer_routing: {blocks: [0, 1, 2], regions: 2, topk: 4}\n",
                                  m.model.encoder_shape()),
                            &routed_ledger);
    for (size_t i = 0; i < dense.size(); ++i) EXPECT_NEAR(routed[i], dense[i], 1e-4f) << i;
    // Same attention products; the region affinity is extra: 3 blocks x 4^2 x 32.
    EXPECT_EQ(routed_ledger.total(), dense_ledger.total() + 3 * 16 * 32);
    EXPECT_EQ(m.state.tokens_entering_block, (std::vector<int>{17, 17, 17}));
}

TEST(BiformerRouting, DefaultBlocksAreTheSecondHalf) {
    TinyModel m;  // depth 3: blocks 1 and 2 route
    Ledger dense_ledger, routed_ledger;
    m.forward({}, &dense_ledger);
    m.forward(build("  - biformer_routing: {regions: 2, topk: 1}\n", m.model.encoder_shape()), &routed_ledger);
    const uint64_t c = 32, dense_block = 2 * 17 * 17 * c, routed_block = 2 * (17 + 16 * 5) * c + 16 * c;
    EXPECT_EQ(routed_ledger.total(), dense_ledger.total() - 2 * dense_block + 2 * routed_block);
    EXPECT_EQ(m.state.tokens_entering_block, (std::vector<int>{17, 17, 17}));
}

TEST(BiformerRouting, MacsFallWithTheRoutedKeys) {
    TinyModel m;
    Ledger dense_ledger, routed_ledger;
    m.forward({}, &dense_ledger);
    auto stages = build("  - biformer_routing: {blocks: [0, 2], regions: 2, topk: 1}\n", m.model.encoder_shape());
    auto logits = m.forward(stages, &routed_ledger);
    for (float x : logits) EXPECT_TRUE(std::isfinite(x));
    // Per routed block: dense scores + values 2 * 17^2 * 32 become the CLS row
    // (17 keys) and 16 patch queries x (CLS + 4 routed tokens), plus 4^2 x 32.
    const uint64_t c = 32, dense_block = 2 * 17 * 17 * c, routed_block = 2 * (17 + 16 * 5) * c + 16 * c;
    EXPECT_EQ(routed_ledger.total(), dense_ledger.total() - 2 * dense_block + 2 * routed_block);
    EXPECT_EQ(routed_ledger.by_stage().at("biformer_routing"), 2 * routed_block);
}

// Drops every patch token after `block` (a stand-in for a token-reducing stage).
class DropAfter : public Stage {
public:
    explicit DropAfter(int block) : block_(block) {}
    const std::string& name() const override { return name_; }
    Signals signals(int block) const override { return {false, block == block_}; }
    void encoder_after_attention(BlockView& v) override {
        if (v.block != block_) return;
        std::vector<int32_t> map(size_t(v.state->count), -1);
        for (int t = 0; t < v.state->prefix + 8; ++t) map[size_t(t)] = t;
        v.state->remap(map.data(), v.state->prefix + 8);
    }

private:
    std::string name_ = "drop";
    int block_;
};

TEST(BiformerRouting, AfterATokenReducingStageIsARuntimeError) {
    TinyModel m;
    std::string file;
    auto stages = build("  - biformer_routing: {blocks: [0, 2], regions: 2, topk: 1}\n", m.model.encoder_shape(), &file);
    DropAfter drop(1);
    Stage* chain[] = {stages[0].get(), &drop};
    auto pixels = test::random_values(3 * 32 * 32, 8);
    std::vector<float> logits(10);
    EXPECT_EQ(error_of([&] { vit_forward(m.model, m.state, pixels.data(), 1, chain, 2, nullptr, logits.data()); }),
              file + ": block 2: the sequence (9 tokens) is no longer the intact 4x4 patch grid; "
                     "biformer_routing must come before token-reducing stages at that block");
    // Routing in blocks up to the reduction is fine.
    DropAfter late(2);
    Stage* ok[] = {stages[0].get(), &late};
    EXPECT_EQ(error_of([&] { vit_forward(m.model, m.state, pixels.data(), 1, ok, 2, nullptr, logits.data()); }),
              "(no error)");
}

TEST(BiformerRouting, BadSettingsNameTheKey) {
    const EncoderShape shape{12, 3, 192, 1, 14, 14};
    EXPECT_EQ(build_error("  - biformer_routing: {regions: 0}\n", shape),
              "FILE:2: key 'stages[0].biformer_routing.regions': must be in 1..4096, got 0");
    EXPECT_EQ(build_error("  - biformer_routing: {regions: 15}\n", shape),
              "FILE:2: key 'stages[0].biformer_routing.regions': must be at most the patch grid's shorter side 14 "
                  "(grid 14x14), got 15");
    EXPECT_EQ(build_error("  - biformer_routing: {regions: 7, topk: 50}\n", shape),
              "FILE:2: key 'stages[0].biformer_routing.topk': must be at most regions^2 = 49, got 50");
    EXPECT_EQ(build_error("  - biformer_routing: {blocks: [3, 12]}\n", shape),
              "FILE:2: key 'stages[0].biformer_routing.blocks': block 12 is past the encoder's depth 12 (blocks 0..11)");
    EXPECT_EQ(build_error("  - biformer_routing: {blocks: [3, 3]}\n", shape),
              "FILE:2: key 'stages[0].biformer_routing.blocks': block 3 is listed twice");
    EXPECT_EQ(build_error("  - biformer_routing: {blocks: []}\n", shape),
              "FILE:2: key 'stages[0].biformer_routing.blocks': must list at least one block (leave it out for the second half)");
    EXPECT_EQ(build_error("  - biformer_routing: {scale: full}\n", shape),
              "FILE:2: key 'stages[0].biformer_routing.scale': must be 'head' or 'channel', got 'full'");
    EXPECT_EQ(build_error("  - biformer_routing: {top_k: 4}\n", shape),
              "FILE:2: unknown key 'stages[0].biformer_routing.top_k'");
    EXPECT_EQ(build("  - biformer_routing: {}\n", shape).size(), 1u);  // the defaults fit a 224 ViT
}

}  // namespace
}  // namespace tessera
