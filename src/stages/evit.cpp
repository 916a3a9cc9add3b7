#include "stages/evit.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "tessera/error.h"

namespace tessera {

// ---------------------------------------------------------------- the math

int evit_keep_count(double keep_rate, int candidates) {
    // left_tokens = math.ceil(keep_rate * (N - 1))
    return int(std::ceil(keep_rate * double(candidates)));
}

void evit_scores(float* scores, const float* cls_attention, int heads, int count) {
    // cls_attn = attn[:, :, 0, 1:].mean(dim=1)
    const int n = count - 1;
    for (int j = 0; j < n; ++j) scores[j] = 0.0f;
    for (int h = 0; h < heads; ++h) {
        const float* row = cls_attention + int64_t(h) * count + 1;
        for (int j = 0; j < n; ++j) scores[j] += row[j];
    }
    for (int j = 0; j < n; ++j) scores[j] /= float(heads);
}

void evit_select(int32_t* kept, int32_t* dropped, const float* scores, int n, int k, EvitOrder order,
                 int32_t* work, uint8_t* mask) {
    // _, idx = torch.topk(cls_attn, left_tokens, sorted=True), with a total
    // order: higher score first, then the lower index.
    auto before = [scores](int32_t a, int32_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); };
    std::iota(work, work + n, 0);
    if (order == EvitOrder::score) {
        std::partial_sort(work, work + k, work + n, before);  // only the top k get sorted
    } else if (k < n) {
        std::nth_element(work, work + k, work + n, before);  // top k in work[0..k), unordered
    }
    // compl = complement_idx(idx, N - 1), through a mask instead of a sort.
    std::memset(mask, 0, size_t(n));
    for (int i = 0; i < k; ++i) mask[work[i]] = 1;
    int d = 0, r = 0;
    for (int j = 0; j < n; ++j) {
        if (!mask[j]) dropped[d++] = j;
        else if (order == EvitOrder::raster) kept[r++] = j;
    }
    if (order == EvitOrder::score) std::copy(work, work + k, kept);
}

void evit_fuse(float* f, const float* y, int64_t dim, const float* scores, const int32_t* dropped, int n_dropped) {
    // extra_token = torch.sum(non_topk * non_topk_attn.unsqueeze(-1), dim=1)
    std::fill(f, f + dim, 0.0f);
    for (int i = 0; i < n_dropped; ++i) {
        const float a = scores[dropped[i]];
        const float* row = y + int64_t(dropped[i]) * dim;
        for (int64_t c = 0; c < dim; ++c) f[c] += a * row[c];
    }
}

int evit_token_map(int32_t* old_to_new, int n, const int32_t* kept, int k, const int32_t* dropped, int n_dropped,
                   bool fuse) {
    // x = torch.cat([x[:, 0:1], x_others, extra_token], dim=1)
    const bool fused = fuse && n_dropped > 0;
    old_to_new[0] = 0;
    for (int i = 0; i < k; ++i) old_to_new[1 + kept[i]] = 1 + i;
    for (int i = 0; i < n_dropped; ++i) old_to_new[1 + dropped[i]] = fused ? 1 + k : -1;
    return 1 + k + (fused ? 1 : 0);
}

// ---------------------------------------------------------------- the stage

EvitStage::EvitStage(YamlMap& params) : params_(params) {
    // METHODS.md section 1: blocks 3, 6, 9 (of 12), keep rate 0.7, fusion on.
    blocks_ = params.integers("blocks", {3, 6, 9}, 0, 255);  // the model allows depth <= 256
    if (blocks_.empty()) params.error("blocks", "must list at least one block");
    for (size_t i = 1; i < blocks_.size(); ++i)
        if (blocks_[i] <= blocks_[i - 1])
            params.error("blocks", "must be strictly increasing, got " + std::to_string(blocks_[i]) + " after " +
                                       std::to_string(blocks_[i - 1]));

    keep_rate_ = params.number("keep_rate", 0.7);
    if (!(keep_rate_ > 0.0 && keep_rate_ <= 1.0))
        params.error("keep_rate", "must be in (0, 1], got " + params.node("keep_rate").Scalar());

    fuse_ = params.boolean("fuse", true);

    order_given_ = params.has("order");
    const std::string order = params.string("order", "score");
    if (order == "score") order_ = EvitOrder::score;
    else if (order == "raster") order_ = EvitOrder::raster;
    else params.error("order", "expected score or raster, got '" + order + "'");
    params_ = params;  // with every key marked read
}

void EvitStage::check_decoder(const DecoderShape&) const {
    if (order_given_ && order_ == EvitOrder::score)
        params_.error("order", "must be raster in a vision-language model: the decoder reads the image layout "
                               "from the order of the visual tokens");
    order_ = EvitOrder::raster;
}

void EvitStage::check(const EncoderShape& shape) const {
    for (int b : blocks_)
        if (b >= shape.depth)
            params_.error("blocks", "block " + std::to_string(b) + " is past the encoder's last block " +
                                        std::to_string(shape.depth - 1) + " (depth " + std::to_string(shape.depth) +
                                        ")");
    if (shape.prefix != 1)
        fail(params_.file(), "stage 'evit' scores tokens by the CLS token's attention and needs exactly one prefix "
                             "token (a CLS token); this encoder has " + std::to_string(shape.prefix));
    const size_t n = size_t(shape.tokens());
    work_.assign(n, 0);
    kept_.assign(n, 0);
    dropped_.assign(n, 0);
    old_to_new_.assign(n, 0);
    mask_.assign(n, 0);
}

bool EvitStage::acts_at(int block) const { return std::binary_search(blocks_.begin(), blocks_.end(), block); }

Signals EvitStage::signals(int block) const {
    Signals s;
    s.cls_attention = s.after_attention = acts_at(block);
    return s;
}

void EvitStage::encoder_after_attention(BlockView& view) {
    if (!acts_at(view.block)) return;
    TokenState& ts = *view.state;
    const int count = ts.count, n = count - 1;
    const int64_t dim = view.dim;
    if (!view.cls_attention) fail("evit", "block " + std::to_string(view.block) + ": the model gave no CLS attention row");
    if (size_t(count) > mask_.size()) fail("evit", "token buffers not sized: call check() with the encoder's shape");

    const int k = evit_keep_count(keep_rate_, n);
    if (k >= n) return;  // if left_tokens == N - 1: nothing dropped, no fused token
    const int n_dropped = n - k, rows = k + (fuse_ ? 1 : 0);
    if (view.scratch_floats < n + rows * dim) fail("evit", "stage scratch too small for the sequence");

    float* scores = view.scratch;  // [n]
    float* out = scores + n;       // [rows, dim]: kept rows, then f
    evit_scores(scores, view.cls_attention, view.heads, count);
    evit_select(kept_.data(), dropped_.data(), scores, n, k, order_, work_.data(), mask_.data());

    // The candidates are rows 1.. of y = x + Attn(LN1(x)).
    float* y = view.x + dim;
    for (int i = 0; i < k; ++i)
        std::memcpy(out + i * dim, y + int64_t(kept_[size_t(i)]) * dim, size_t(dim) * sizeof(float));
    if (fuse_) {
        evit_fuse(out + k * dim, y, dim, scores, dropped_.data(), n_dropped);
        if (view.ledger) view.ledger->add(Component::other, uint64_t(n_dropped) * uint64_t(dim));
    }
    std::memcpy(y, out, size_t(rows * dim) * sizeof(float));

    const int new_count = evit_token_map(old_to_new_.data(), n, kept_.data(), k, dropped_.data(), n_dropped, fuse_);
    ts.remap(old_to_new_.data(), new_count);
    if (fuse_) ts.kind[size_t(1 + k)] = TokenKind::fused;
}

}  // namespace tessera
