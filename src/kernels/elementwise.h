// Row-wise normalizations and activations. Elementwise work is not counted
// in the MAC ledger (the papers' convention).
#pragma once
#include <cstdint>

namespace tessera {

// y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * gamma + beta, for r < rows.
// y may alias x.
void layer_norm(float* y, const float* x, const float* gamma, const float* beta, int64_t rows, int64_t dim,
                float eps);

// layer_norm with each result rounded to bfloat16 (nearest, ties to even, as
// f32_to_bf16): the input of a bf16 product, written once instead of in f32
// and converted. y must not alias x.
void layer_norm_bf16(uint16_t* y, const float* x, const float* gamma, const float* beta, int64_t rows, int64_t dim,
                     float eps);

// y[i] = x[i] * scale rounded to bfloat16 (as f32_to_bf16, except that a
// CPU with AVX512-BF16 flushes f32 denormals to zero), i < n; one thread
// (for callers inside a parallel region). layer_norm_bf16 and
// softmax_row_unnormalized_bf16 round the same way.
void scale_to_bf16(uint16_t* y, const float* x, int64_t n, float scale);

// x = 0.5 x (1 + erf(x / sqrt 2)), in place.
void gelu_erf(float* x, int64_t n);

// Each of `rows` rows of length n: x = softmax(x + bias) in place; bias[n]
// (one value per column, e.g. log token size) may be null.
void softmax_rows(float* x, int64_t rows, int64_t n, const float* bias = nullptr);
// One row of softmax_rows without any OpenMP region, for callers that are
// already inside one.
void softmax_row(float* x, int64_t n, const float* bias = nullptr);
// softmax_row without the division: x = exp(x + bias - max) in place, and
// returns the row's sum, for a caller that divides later where it reads the
// row anyway (attention scales each head's output row instead).
float softmax_row_unnormalized(float* x, int64_t n, const float* bias = nullptr);
// The same with the exps rounded to bf16 into probs[n] instead of written
// over x (x receives the bias); the sum is of the exps before rounding.
float softmax_row_unnormalized_bf16(float* x, uint16_t* probs, int64_t n, const float* bias = nullptr);

// HF LlamaRMSNorm in float32: y[r, :] = weight * (x[r, :] / sqrt(mean(x[r, :]^2) + eps)).
// y may alias x.
void rms_norm(float* y, const float* x, const float* weight, int64_t rows, int64_t dim, float eps);

// CLIP's activation x = x * sigmoid(1.702 x), in place.
void quick_gelu(float* x, int64_t n);

// LLaMA's gated MLP activation. gate_up[rows, 2 * inter] holds gate | up in
// each row; out[r, i] = silu(gate[r, i]) * up[r, i], out is [rows, inter].
// out may equal gate_up: row r is written to [r*inter, (r+1)*inter), which
// overlaps only rows already read, as long as rows are done in waves
// [1, 2), [2, 4), [4, 8), ...; that is what runs in that case.
void silu_mul(float* out, const float* gate_up, int64_t rows, int64_t inter);

// The same with gate and up in separate buffers: gate[i] = silu(gate[i]) * up[i].
void silu_mul_separate(float* gate, const float* up, int64_t n);

// HF Llama rotary embedding, "rotate_half" convention (the two halves of each
// head rotate together, not interleaved pairs). Row r of x ([rows, row_stride],
// heads * head_dim used, head h at h * head_dim) is at position positions[r]:
// with a = float(p) * inv_freq[i] (a float32 product, as HF),
// c = cos(a) * scaling, s = sin(a) * scaling, for i < head_dim / 2:
//   x[i] = x[i] c - x[i + half] s,  x[i + half] = x[i + half] c + x[i] s.
void rope_apply(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                const int32_t* positions, const float* inv_freq, float attention_scaling);

// HF's default rotary frequencies, in float32 like torch:
// inv_freq[i] = 1 / theta^(float(2i) / float(head_dim)), i < head_dim / 2.
void rope_inv_freq(float* inv_freq, int64_t head_dim, double theta);

}  // namespace tessera
