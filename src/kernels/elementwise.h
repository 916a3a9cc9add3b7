// Row-wise normalizations and activations. Elementwise work is not counted
// in the MAC ledger (the papers' convention).
#pragma once
#include <cstdint>

namespace tessera {

// y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * gamma + beta, for r < rows.
// y may alias x.
void layer_norm(float* y, const float* x, const float* gamma, const float* beta, int64_t rows, int64_t dim,
                float eps);

// x = 0.5 x (1 + erf(x / sqrt 2)), in place.
void gelu_erf(float* x, int64_t n);

// Each of `rows` rows of length n: x = softmax(x + bias) in place; bias[n]
// (one value per column, e.g. log token size) may be null.
void softmax_rows(float* x, int64_t rows, int64_t n, const float* bias = nullptr);

}  // namespace tessera
