// window_attention: the window groups, the windowed attention against a dense
// softmax attention masked to each query's window plus CLS (double
// precision), the stage inside vit_forward (dense when the window is the
// whole grid; analytic MACs), and its errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "models/vit.h"
#include "pipeline/config.h"
#include "stages/window_attention.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {

using test::error_of;

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

using test::masked_attention;

TEST(WindowAttention, GroupsAreCLSGlobalThenWindowsInRasterOrder) {
    AttentionGroups g;
    window_groups(1, 4, 4, 2, g);  // CLS + 4x4 grid, 2x2 windows
    EXPECT_EQ(g.query_start, (std::vector<int32_t>{0, 1, 5, 9, 13, 17}));
    EXPECT_EQ(g.queries, (std::vector<int32_t>{0, 1, 2, 5, 6, 3, 4, 7, 8, 9, 10, 13, 14, 11, 12, 15, 16}));
    EXPECT_EQ(g.key_start, (std::vector<int32_t>{0, 17, 22, 27, 32, 37}));
    EXPECT_EQ(std::vector<int32_t>(g.keys.begin() + 17, g.keys.begin() + 27),
              (std::vector<int32_t>{0, 1, 2, 5, 6, 0, 3, 4, 7, 8}));
    EXPECT_EQ(gathered_attention_slot_floats(g), 20);  // 4 queries x 5 keys beats 1 x 17
    window_groups(0, 2, 4, 2, g);  // no CLS: windows only
    EXPECT_EQ(g.query_start, (std::vector<int32_t>{0, 4, 8}));
    EXPECT_EQ(g.keys, (std::vector<int32_t>{0, 1, 4, 5, 2, 3, 6, 7}));
}

TEST(GatheredAttention, ArbitraryGroupsMatchMaskedDenseAttention) {
    // Groups the grid stages never build: uneven sizes, shuffled queries,
    // keys in any order and shared between groups, a query-less group.
    const int n = 11, heads = 2, d = 8, c = heads * d;
    AttentionGroups g;
    g.query_start = {0, 3, 4, 4, 11};
    g.queries = {7, 0, 3, 5, 1, 2, 4, 6, 8, 9, 10};
    g.key_start = {0, 4, 15, 17, 19};
    g.keys = {10, 0, 7, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 8};
    std::vector<std::vector<int>> keys_of(n);
    for (int64_t gi = 0; gi < g.groups(); ++gi)
        for (int32_t qi = g.query_start[size_t(gi)]; qi < g.query_start[size_t(gi + 1)]; ++qi)
            keys_of[size_t(g.queries[size_t(qi)])].assign(g.keys.begin() + g.key_start[size_t(gi)],
                                                           g.keys.begin() + g.key_start[size_t(gi + 1)]);
    auto allowed = [&](int i, int j) {
        return std::find(keys_of[size_t(i)].begin(), keys_of[size_t(i)].end(), j) != keys_of[size_t(i)].end();
    };
    auto qkv = test::random_values(size_t(n * 3 * c), 17, 2.0f);
    auto bias = test::random_values(size_t(n), 18);
    std::vector<float> out(size_t(n * c), -7.0f), cls(size_t(heads * n), -7.0f);
    std::vector<float> scratch(size_t(2 * gathered_attention_slot_floats(g)));
    GatheredAttentionArgs args;
    args.qkv = qkv.data(), args.out = out.data(), args.tokens = n, args.heads = heads, args.head_dim = d;
    args.scale = 0.3f, args.key_bias = bias.data(), args.cls_probs = cls.data();
    args.query_start = g.query_start.data(), args.queries = g.queries.data();
    args.key_start = g.key_start.data(), args.keys = g.keys.data(), args.groups = g.groups();
    args.scratch = scratch.data(), args.slots = 2, args.slot_floats = gathered_attention_slot_floats(g);
    Ledger ledger;
    gathered_attention(&ledger, args);
    std::vector<double> ref, ref_cls;
    masked_attention(qkv, n, heads, d, 0.3, bias.data(), allowed, ref, ref_cls);
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << "token " << i / c << " channel " << i % c;
    for (size_t i = 0; i < ref_cls.size(); ++i) ASSERT_NEAR(cls[i], ref_cls[i], 2e-6) << "cls prob " << i;
    EXPECT_EQ(ledger.total(), uint64_t(2 * (3 * 4 + 1 * 11 + 0 * 2 + 7 * 2) * c));
}

struct WindowCase {
    int prefix, gh, gw, heads, head_dim, window;
    bool key_bias;
};

class WindowAttentionTest : public ::testing::TestWithParam<WindowCase> {};

TEST_P(WindowAttentionTest, MatchesMaskedDenseAttention) {
    const WindowCase p = GetParam();
    const int n = p.prefix + p.gh * p.gw, c = p.heads * p.head_dim;
    auto stages = build("  - window_attention: {blocks: [0], window: " + std::to_string(p.window) + "}\n",
                        EncoderShape{1, p.heads, c, p.prefix, p.gh, p.gw});
    auto qkv = test::random_values(size_t(n * 3 * c), 31 + uint32_t(p.gh), 2.0f);
    auto bias = test::random_values(size_t(n), 6, 0.5f);
    TokenState ts;
    ts.init(p.prefix, p.gh, p.gw);
    std::vector<float> out(size_t(n * c), -7.0f), cls(size_t(p.heads * n), -7.0f);
    Ledger ledger;
    AttentionView view;
    view.block = 0, view.ledger = &ledger, view.state = &ts, view.qkv = qkv.data(), view.out = out.data();
    view.tokens = n, view.heads = p.heads, view.head_dim = p.head_dim;
    view.scale = 1.0f / std::sqrt(float(p.head_dim));
    view.key_bias = p.key_bias ? bias.data() : nullptr;
    view.cls_probs = cls.data();
    ASSERT_TRUE(stages[0]->encoder_attention(view));

    auto window_of = [&](int token) {
        const int patch = token - p.prefix;
        return (patch / p.gw) / p.window * (p.gw / p.window) + (patch % p.gw) / p.window;
    };
    auto allowed = [&](int i, int j) { return i < p.prefix || j < p.prefix || window_of(i) == window_of(j); };
    std::vector<double> ref, ref_cls;
    masked_attention(qkv, n, p.heads, p.head_dim, 1.0 / std::sqrt(double(p.head_dim)), view.key_bias, allowed, ref,
                     ref_cls);
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << "token " << i / c << " channel " << i % c;
    for (size_t i = 0; i < ref_cls.size(); ++i) ASSERT_NEAR(cls[i], ref_cls[i], 2e-6) << "cls prob " << i;
    uint64_t pairs = 0;
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) pairs += allowed(i, j);
    EXPECT_EQ(ledger.total(), 2 * pairs * c);
}

INSTANTIATE_TEST_SUITE_P(Cases, WindowAttentionTest,
                         ::testing::Values(WindowCase{1, 4, 4, 2, 16, 2, false},  // 4 windows of 4
                                           WindowCase{1, 6, 6, 2, 8, 3, true},    // 4 windows of 9, key bias
                                           WindowCase{1, 6, 6, 2, 16, 2, true},   // 9 windows of 4
                                           WindowCase{1, 4, 6, 3, 6, 2, false},   // non-square, head_dim 6
                                           WindowCase{0, 4, 4, 2, 16, 2, true},   // no CLS
                                           WindowCase{1, 4, 4, 2, 16, 4, false},  // one window: dense
                                           WindowCase{1, 14, 14, 3, 64, 7, true}));  // ViT-Tiny at 224: the parallel path

struct TinyModel {
    VitModel model;
    VitState state;
    TinyModel() {
        std::string dir = test::temp_dir() + "/tiny";
        test::write_tiny_vit(dir, {});
        vit_load(model, dir);
        vit_state_init(state, model, 1);
    }
    std::vector<float> forward(const std::vector<std::unique_ptr<Stage>>& stages, Ledger* ledger) {
        std::vector<Stage*> ptrs;
        for (const auto& s : stages) ptrs.push_back(s.get());
        auto pixels = test::random_values(3 * 32 * 32, 9);
        std::vector<float> logits(10);
        vit_forward(model, state, pixels.data(), 1, ptrs.data(), int(ptrs.size()), ledger, logits.data());
        return logits;
    }
};

TEST(WindowAttention, WindowAsLargeAsTheGridEqualsDenseAttention) {
    TinyModel m;  // 4x4 grid, dim 32, 2 heads, depth 3
    Ledger dense_ledger, window_ledger;
    auto dense = m.forward({}, &dense_ledger);
    auto windowed = m.forward(build("  - window_attention: {window: 4}\n", m.model.encoder_shape()), &window_ledger);
    for (size_t i = 0; i < dense.size(); ++i) EXPECT_NEAR(windowed[i], dense[i], 1e-4f) << i;
    EXPECT_EQ(window_ledger.total(), dense_ledger.total());
}

TEST(WindowAttention, MacsFallWithTheWindow) {
    TinyModel m;
    Ledger dense_ledger, window_ledger;
    m.forward({}, &dense_ledger);
    auto logits = m.forward(build("  - window_attention: {blocks: [1], window: 2}\n", m.model.encoder_shape()),
                            &window_ledger);
    for (float x : logits) EXPECT_TRUE(std::isfinite(x));
    // Block 1: the CLS row over 17 keys, 16 patch queries over CLS + 4 window tokens.
    const uint64_t c = 32, dense_block = 2 * 17 * 17 * c, window_block = 2 * (17 + 16 * 5) * c;
    EXPECT_EQ(window_ledger.total(), dense_ledger.total() - dense_block + window_block);
    EXPECT_EQ(window_ledger.by_stage().at("window_attention"), window_block);
}

TEST(WindowAttention, DefaultBlocksAlternateFromBlockOne) {
    TinyModel m;  // depth 3: block 1 uses windows, blocks 0 and 2 stay dense
    Ledger dense_ledger, window_ledger;
    m.forward({}, &dense_ledger);
    m.forward(build("  - window_attention: {window: 2}\n", m.model.encoder_shape()), &window_ledger);
    const uint64_t c = 32, dense_block = 2 * 17 * 17 * c, window_block = 2 * (17 + 16 * 5) * c;
    EXPECT_EQ(window_ledger.total(), dense_ledger.total() - dense_block + window_block);
    EXPECT_EQ(window_ledger.by_stage().at("window_attention"), window_block);
}

// Swaps two patch tokens at `block`: same count, no longer raster order.
class Reorder : public Stage {
public:
    explicit Reorder(int block) : block_(block) {}
    const std::string& name() const override { return name_; }
    Signals signals(int block) const override { return {false, block == block_}; }
    void encoder_after_attention(BlockView& v) override {
        if (v.block != block_) return;
        std::vector<int32_t> map(size_t(v.state->count), -1);
        for (int t = 0; t < v.state->count; ++t) map[size_t(t)] = t;
        std::swap(map[1], map[2]);  // same count, patches no longer in raster order
        v.state->remap(map.data(), v.state->count);
    }

private:
    std::string name_ = "reorder";
    int block_;
};

TEST(WindowAttention, AfterAReorganizingStageIsARuntimeError) {
    TinyModel m;
    std::string file;
    auto stages = build("  - window_attention: {window: 2}\n", m.model.encoder_shape(), &file);
    Reorder reorder(0);
    Stage* chain[] = {stages[0].get(), &reorder};
    auto pixels = test::random_values(3 * 32 * 32, 8);
    std::vector<float> logits(10);
    EXPECT_EQ(error_of([&] { vit_forward(m.model, m.state, pixels.data(), 1, chain, 2, nullptr, logits.data()); }),
              file + ": block 1: the sequence (17 tokens) is no longer the intact 4x4 patch grid; "
                     "window_attention must come before token-reducing stages at that block");
}

TEST(WindowAttention, BadSettingsNameTheKey) {
    const EncoderShape shape{12, 3, 192, 1, 14, 14};
    EXPECT_EQ(build_error("  - window_attention: {window: 0}\n", shape),
              "FILE:2: key 'stages[0].window_attention.window': must be in 1..4096, got 0");
    EXPECT_EQ(build_error("  - window_attention: {window: 4}\n", shape),
              "FILE:2: key 'stages[0].window_attention.window': must divide both sides of the 14x14 patch grid, got 4");
    EXPECT_EQ(build_error("  - window_attention: {window: 28}\n", shape),
              "FILE:2: key 'stages[0].window_attention.window': must divide both sides of the 14x14 patch grid, got 28");
    EXPECT_EQ(build_error("  - window_attention: {blocks: [0, 12]}\n", shape),
              "FILE:2: key 'stages[0].window_attention.blocks': block 12 is past the encoder's depth 12 (blocks 0..11)");
    EXPECT_EQ(build_error("  - window_attention: {blocks: [2, 2]}\n", shape),
              "FILE:2: key 'stages[0].window_attention.blocks': block 2 is listed twice");
    EXPECT_EQ(build_error("  - window_attention: {blocks: []}\n", shape),
              "FILE:2: key 'stages[0].window_attention.blocks': must list at least one block (leave it out for blocks "
              "1, 3, 5, ...)");
    EXPECT_EQ(build_error("  - window_attention: {size: 7}\n", shape),
              "FILE:2: unknown key 'stages[0].window_attention.size'");
    EXPECT_EQ(build("  - window_attention: {}\n", shape).size(), 1u);  // 7 divides 14
}

}  // namespace
}  // namespace tessera
