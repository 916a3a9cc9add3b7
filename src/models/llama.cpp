#include "models/llama.h"

#include <cmath>
#include <cstring>
#include <numbers>

#include "kernels/causal_attention.h"
#include "kernels/elementwise.h"
#include "tessera/error.h"
#include "tessera/memory.h"

namespace tessera {

std::vector<float> llama_rope_frequencies(const LlamaConfig& cfg, float* attention_scaling) {
    const RopeConfig& r = cfg.rope;
    std::vector<float> inv(size_t(cfg.head_dim / 2));
    rope_inv_freq(inv.data(), cfg.head_dim, r.theta);
    *attention_scaling = 1.0f;
    if (r.type == "linear") {
        for (float& f : inv) f = f / float(r.factor);
    } else if (r.type == "llama3") {
        // Long wavelengths are slowed by `factor`, short ones kept, the band
        // between interpolated (transformers' _compute_llama3_parameters).
        const double old_len = r.original_max_positions;
        const double low_wavelen = old_len / r.low_freq_factor, high_wavelen = old_len / r.high_freq_factor;
        for (float& f : inv) {
            const double wavelen = 2.0 * std::numbers::pi / f;
            if (wavelen > low_wavelen) {
                f = float(f / r.factor);
            } else if (wavelen >= high_wavelen) {
                const double smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
                f = float((1.0 - smooth) * f / r.factor + smooth * f);
            }
        }
    }
    return inv;
}

void llama_load(LlamaModel& m, WeightLoader& w, const LlamaConfig& cfg, const std::string& prefix,
                const std::string& head, DType dtype, const std::string& where) {
    m.cfg = cfg;
    const int64_t d = cfg.hidden, q = int64_t(cfg.heads) * cfg.head_dim, kv = int64_t(cfg.kv_heads) * cfg.head_dim;
    const int64_t inter = cfg.intermediate;
    m.embed = w.matrix(prefix + "embed_tokens.weight", cfg.vocab, d, dtype, /*pack=*/false);  // read by rows
    m.layers.resize(size_t(cfg.layers));
    for (int l = 0; l < cfg.layers; ++l) {
        const std::string p = prefix + "layers." + std::to_string(l) + ".";
        LlamaLayer& L = m.layers[size_t(l)];
        L.attn_norm = w.f32(p + "input_layernorm.weight", {d});
        const bool fuse = dtype == DType::f32;
        if (fuse) {
            L.qkv = w.stacked({p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"},
                              {q, kv, kv}, d, dtype);
        } else {
            L.q = w.matrix(p + "self_attn.q_proj.weight", q, d, dtype);
            L.k = w.matrix(p + "self_attn.k_proj.weight", kv, d, dtype);
            L.v = w.matrix(p + "self_attn.v_proj.weight", kv, d, dtype);
        }
        L.qkv_bias = cfg.attention_bias ? w.f32_concat({p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias",
                                                        p + "self_attn.v_proj.bias"},
                                                       {q, kv, kv})
                                        : nullptr;
        L.o = w.matrix(p + "self_attn.o_proj.weight", d, q, dtype);
        L.o_bias = cfg.attention_bias ? w.f32(p + "self_attn.o_proj.bias", {d}) : nullptr;
        L.mlp_norm = w.f32(p + "post_attention_layernorm.weight", {d});
        if (fuse) {
            L.gate_up = w.stacked({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}, {inter, inter}, d, dtype);
        } else {
            L.gate = w.matrix(p + "mlp.gate_proj.weight", inter, d, dtype);
            L.up = w.matrix(p + "mlp.up_proj.weight", inter, d, dtype);
        }
        L.gate_up_bias = cfg.mlp_bias ? w.f32_concat({p + "mlp.gate_proj.bias", p + "mlp.up_proj.bias"}, {inter, inter})
                                      : nullptr;
        L.down = w.matrix(p + "mlp.down_proj.weight", d, inter, dtype);
        L.down_bias = cfg.mlp_bias ? w.f32(p + "mlp.down_proj.bias", {d}) : nullptr;
    }
    m.norm = w.f32(prefix + "norm.weight", {d});
    if (w.has(head)) {
        m.lm_head = w.matrix(head, cfg.vocab, d, dtype);
    } else if (cfg.tie_embeddings) {
        m.lm_head = m.embed;
    } else {
        fail(where, "the weights have no '" + head + "' and tie_word_embeddings is false");
    }
    m.inv_freq = llama_rope_frequencies(cfg, &m.attention_scaling);
}

void llama_state_init(LlamaState& s, const LlamaModel& m, int64_t capacity, int64_t max_step) {
    const LlamaConfig& c = m.cfg;
    if (capacity > c.max_positions)
        fail("decoder", "a context of " + std::to_string(capacity) + " tokens exceeds the model's maximum of " +
                            std::to_string(c.max_positions) + " (max_position_embeddings)");
    s.capacity = capacity, s.max_step = max_step;
    const int64_t cache = int64_t(c.layers) * m.kv_width() * capacity;
    const int64_t qkv = m.q_width() + 2 * m.kv_width();
    const int64_t lin = linear_w_scratch_floats(std::max<int64_t>(c.hidden, c.intermediate));
    const int64_t att = causal_attention_scratch_floats(max_step, capacity);
    const int64_t floats = 2 * cache + 2 * max_step * c.hidden + max_step * qkv + max_step * m.q_width() +
                           max_step * 2 * c.intermediate + c.vocab + lin + att + 2 * max_step +
                           int64_t(c.heads) * capacity;
    memory_check("decoder", "a context of " + std::to_string(capacity) + " tokens (KV cache and activations)",
                 uint64_t(floats) * sizeof(float), "a shorter prompt or fewer --max-new-tokens need less");
    s.arena.reserve(size_t(floats) * sizeof(float) + 16 * 64);
    // The KV cache in 2 MiB pages whatever the memory's state when a
    // request first fills it: after a --no-mmap load of LLaVA-7B on the
    // 23 GiB 2-core Zen 5 VM, 200-320 MB of this 730 MB arena had faulted in
    // as 4 KiB pages, and each head's keys and values are read from their
    // own span at every step (stand-alone, 32 layers of decode attention
    // after 400 MB streamed each: 43 ms a step in 4 KiB pages, 16 in 2 MiB).
    s.arena.commit();
    s.k_cache = s.arena.alloc<float>(size_t(cache));
    s.v_cache = s.arena.alloc<float>(size_t(cache));
    s.x = s.arena.alloc<float>(size_t(max_step * c.hidden));
    s.xn = s.arena.alloc<float>(size_t(max_step * c.hidden));
    s.qkv = s.arena.alloc<float>(size_t(max_step * qkv));
    s.attn = s.arena.alloc<float>(size_t(max_step * m.q_width()));
    s.mlp = s.arena.alloc<float>(size_t(max_step * 2 * c.intermediate));
    s.logits = s.arena.alloc<float>(size_t(c.vocab));
    s.linear_scratch = s.arena.alloc<float>(size_t(lin));
    s.attn_scratch = s.arena.alloc<float>(size_t(att));
    s.positions = s.arena.alloc<int32_t>(size_t(max_step));
    s.keep = s.arena.alloc<int32_t>(size_t(max_step));
    s.last_query = s.arena.alloc<float>(size_t(int64_t(c.heads) * capacity));
    s.layer_len.assign(size_t(c.layers), 0);
    s.prefill_tokens.assign(size_t(c.layers), 0);
    s.prefill_visual.assign(size_t(c.layers), 0);
}

DecoderShape llama_decoder_shape(const LlamaModel& m) {
    DecoderShape s;
    s.layers = m.cfg.layers, s.heads = m.cfg.heads, s.kv_heads = m.cfg.kv_heads;
    s.head_dim = m.cfg.head_dim, s.hidden = m.cfg.hidden;
    return s;
}

void llama_state_reset(LlamaState& s) { std::fill(s.layer_len.begin(), s.layer_len.end(), 0); }

void llama_embed(const LlamaModel& m, const int32_t* ids, int64_t n, float* out) {
    const int64_t d = m.cfg.hidden;
    for (int64_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= m.cfg.vocab)
            fail("decoder", "token id " + std::to_string(ids[i]) + " outside the vocabulary of " +
                                std::to_string(m.cfg.vocab));
        const auto* row = static_cast<const uint8_t*>(m.embed.data) + size_t(ids[i] * d) * dtype_size(m.embed.dtype);
        convert_to_f32(m.embed.dtype, row, out + i * d, size_t(d));
    }
}

namespace {

// What the attention kernel's row hook needs to reach the stages.
struct RowHookContext {
    const DecoderRun* run;
    int layer;
    int64_t past, tokens;
    float* last_query;  // [heads, past + tokens] or null: capture the last row
};

void attention_row_hook(void* context, int64_t head, int64_t t, float* probs, int64_t keys) {
    const RowHookContext& c = *static_cast<const RowHookContext*>(context);
    AttentionRowView view;
    view.layer = c.layer, view.head = int(head), view.prefill = c.run->prefill;
    view.query = c.past + t, view.probs = probs, view.keys = keys;
    for (int i = 0; i < c.run->stage_count; ++i)
        if (c.run->stages[i]->wants_attention_rows(c.layer, c.run->prefill)) c.run->stages[i]->decoder_attention_row(view);
    if (c.last_query && t == c.tokens - 1) std::memcpy(c.last_query + head * keys, probs, size_t(keys) * sizeof(float));
}

// Keeps visual rows image_start + keep[i] (i < kept) and every text row, in
// order; returns the new row count.
int64_t drop_visual_rows(float* x, int32_t* positions, int64_t tokens, int64_t d, int64_t image_start,
                         int64_t image_count, const int32_t* keep, int64_t kept) {
    int64_t to = image_start;
    auto move_row = [&](int64_t from) {
        if (from != to) {
            std::memmove(x + to * d, x + from * d, size_t(d) * sizeof(float));
            positions[to] = positions[from];
        }
        ++to;
    };
    for (int64_t i = 0; i < kept; ++i) {
        if (keep[i] < 0 || keep[i] >= image_count || (i > 0 && keep[i] <= keep[i - 1]))
            fail("decoder", "a stage kept visual token " + std::to_string(keep[i]) +
                                " out of order or outside the image's " + std::to_string(image_count));
        move_row(image_start + keep[i]);
    }
    for (int64_t from = image_start + image_count; from < tokens; ++from) move_row(from);
    return to;
}

}  // namespace

void llama_forward(const LlamaModel& m, LlamaState& s, const float* embeds, const int32_t* positions, int64_t tokens,
                   Ledger* ledger, const DecoderRun* run) {
    const LlamaConfig& c = m.cfg;
    const int64_t d = c.hidden, hd = c.head_dim, qw = m.q_width(), kvw = m.kv_width(), inter = c.intermediate;
    const int64_t qkv_w = qw + 2 * kvw;
    if (tokens < 1 || tokens > s.max_step)
        fail("decoder", "a step of " + std::to_string(tokens) + " tokens outside 1.." + std::to_string(s.max_step));
    Ledger::ComponentScope scope(ledger, Component::decoder);
    std::memcpy(s.x, embeds, size_t(tokens * d) * sizeof(float));
    std::memcpy(s.positions, positions, size_t(tokens) * sizeof(int32_t));
    const bool prefill = run && run->prefill;
    int64_t image_start = prefill ? run->image_start : 0, image_count = prefill ? run->image_count : 0;
    if (image_start < 0 || image_count < 0 || image_start + image_count > tokens)
        fail("decoder", "the image span lies outside the prompt");
    auto layer_view = [&](int l, int64_t past) {
        DecoderLayerView v;
        v.layer = l, v.prefill = prefill, v.ledger = ledger, v.x = s.x, v.tokens = tokens, v.past = past;
        v.hidden = int(d), v.heads = c.heads, v.image_start = image_start, v.image_count = image_count;
        v.keep = s.keep;
        return v;
    };

    for (int l = 0; l < c.layers; ++l) {
        const LlamaLayer& L = m.layers[size_t(l)];
        const int64_t past = s.layer_len[size_t(l)];
        if (past + tokens > s.capacity)
            fail("decoder", "the context is full: " + std::to_string(past + tokens) + " tokens exceed the cache of " +
                                std::to_string(s.capacity));
        if (s.observe) s.observe(l, s.x, tokens);
        if (prefill) s.prefill_tokens[size_t(l)] = tokens, s.prefill_visual[size_t(l)] = image_count;
        bool rows_hooked = false, want_last = false, all_rows = false;
        if (run) {
            DecoderLayerView view = layer_view(l, past);
            for (int i = 0; i < run->stage_count; ++i) {
                Ledger::StageScope stage_scope(ledger, run->stages[i]->name());
                run->stages[i]->decoder_layer_input(view);
                const bool wants = run->stages[i]->wants_attention_rows(l, prefill);
                rows_hooked |= wants;
                all_rows |= wants && run->stages[i]->wants_all_prefill_rows();
                want_last |= prefill && run->stages[i]->decoder_signals(l).last_query_attention;
            }
        }
        float* k_cache = s.k_cache + int64_t(l) * kvw * s.capacity;
        float* v_cache = s.v_cache + int64_t(l) * kvw * s.capacity;

        // h = h + O(attn(...))
        rms_norm(s.xn, s.x, L.attn_norm, tokens, d, c.rms_norm_eps);
        float *q, *k, *v;
        int64_t q_stride, kv_stride;
        if (L.qkv.data) {  // rows q | k | v
            linear_w(ledger, s.qkv, s.xn, L.qkv, L.qkv_bias, tokens, Epilogue::none, s.linear_scratch);
            q = s.qkv, k = s.qkv + qw, v = s.qkv + qw + kvw, q_stride = kv_stride = qkv_w;
        } else {  // blocks [tokens, q] [tokens, kv] [tokens, kv]
            q = s.qkv, k = q + tokens * qw, v = k + tokens * kvw, q_stride = qw, kv_stride = kvw;
            const float* b = L.qkv_bias;
            linear_w(ledger, q, s.xn, L.q, b, tokens, Epilogue::none, s.linear_scratch);
            linear_w(ledger, k, s.xn, L.k, b ? b + qw : nullptr, tokens, Epilogue::none, s.linear_scratch);
            linear_w(ledger, v, s.xn, L.v, b ? b + qw + kvw : nullptr, tokens, Epilogue::none, s.linear_scratch);
        }
        rope_apply(q, tokens, q_stride, c.heads, hd, s.positions, m.inv_freq.data(), m.attention_scaling);
        rope_apply(k, tokens, kv_stride, c.kv_heads, hd, s.positions, m.inv_freq.data(), m.attention_scaling);
        kv_cache_write(k_cache, v_cache, s.capacity, k, v, kv_stride, tokens, past, c.kv_heads, hd);
        CausalAttentionArgs a;
        a.q = q, a.q_stride = q_stride, a.k_cache = k_cache, a.v_cache = v_cache, a.capacity = s.capacity;
        a.out = s.attn, a.tokens = tokens, a.past = past, a.q_heads = c.heads, a.kv_heads = c.kv_heads;
        a.head_dim = hd, a.scale = 1.0f / std::sqrt(float(hd)), a.scratch = s.attn_scratch;
        RowHookContext hook{run, l, past, tokens, want_last ? s.last_query : nullptr};
        if (rows_hooked || want_last) {
            a.row_hook.fn = attention_row_hook, a.row_hook.context = &hook;
            // Prefill offers the queries after the image (and the last one); decoding its one query.
            a.row_hook.first_row = !rows_hooked ? tokens - 1 : prefill && !all_rows ? image_start + image_count : 0;
        }
        causal_attention(ledger, a);
        linear_w(ledger, s.x, s.attn, L.o, L.o_bias, tokens, Epilogue::residual, s.linear_scratch);
        s.layer_len[size_t(l)] = past + tokens;

        // h = h + Down(silu(Gate(..)) * Up(..))
        rms_norm(s.xn, s.x, L.mlp_norm, tokens, d, c.rms_norm_eps);
        if (L.gate_up.data) {
            linear_w(ledger, s.mlp, s.xn, L.gate_up, L.gate_up_bias, tokens, Epilogue::none, s.linear_scratch);
            silu_mul(s.mlp, s.mlp, tokens, inter);
        } else {
            float* up = s.mlp + tokens * inter;
            const float* b = L.gate_up_bias;
            linear_w(ledger, s.mlp, s.xn, L.gate, b, tokens, Epilogue::none, s.linear_scratch);
            linear_w(ledger, up, s.xn, L.up, b ? b + inter : nullptr, tokens, Epilogue::none, s.linear_scratch);
            silu_mul_separate(s.mlp, up, tokens * inter);
        }
        linear_w(ledger, s.x, s.mlp, L.down, L.down_bias, tokens, Epilogue::residual, s.linear_scratch);

        // Stages after the layer; in prefill one may drop visual tokens for the later layers.
        if (run) {
            DecoderLayerView view = layer_view(l, past);
            view.last_query_attention = want_last ? s.last_query : nullptr;
            for (int i = 0; i < run->stage_count; ++i) {
                {
                    Ledger::StageScope stage_scope(ledger, run->stages[i]->name());
                    run->stages[i]->decoder_after_layer(view);
                }
                if (view.kept < 0) continue;
                if (!prefill) fail(run->stages[i]->name(), "dropped tokens outside prefill");
                tokens = drop_visual_rows(s.x, s.positions, tokens, d, image_start, image_count, s.keep, view.kept);
                image_count = view.kept;
                view = layer_view(l, past);
            }
        }
    }

    // Logits of the last token only (all rows are normalized when observed).
    const int64_t first = s.observe ? 0 : tokens - 1;
    rms_norm(s.xn + first * d, s.x + first * d, m.norm, tokens - first, d, c.rms_norm_eps);
    if (s.observe) s.observe(c.layers, s.xn, tokens);
    linear_w(ledger, s.logits, s.xn + (tokens - 1) * d, m.lm_head, nullptr, 1, Epilogue::none, s.linear_scratch);
}

}  // namespace tessera
