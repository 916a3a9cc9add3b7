#include "kernels/elementwise.h"

#include <algorithm>
#include <cmath>

namespace tessera {

void layer_norm(float* y, const float* x, const float* gamma, const float* beta, int64_t rows, int64_t dim,
                float eps) {
#pragma omp parallel for schedule(static) if (rows * dim > 16384)
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * dim;
        float* yr = y + r * dim;
        // Two passes in double-free float with a shifted mean: stable for
        // the large activations some ViT channels carry.
        float mean = 0.0f;
        for (int64_t i = 0; i < dim; ++i) mean += xr[i];
        mean /= float(dim);
        float var = 0.0f;
        for (int64_t i = 0; i < dim; ++i) {
            float d = xr[i] - mean;
            var += d * d;
        }
        var /= float(dim);
        float inv = 1.0f / std::sqrt(var + eps);
        for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
    }
}

void gelu_erf(float* x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * float(M_SQRT1_2)));
}

void softmax_rows(float* x, int64_t rows, int64_t n, const float* bias) {
#pragma omp parallel for schedule(static) if (rows * n > 16384)
    for (int64_t r = 0; r < rows; ++r) {
        float* xr = x + r * n;
        if (bias)
            for (int64_t j = 0; j < n; ++j) xr[j] += bias[j];
        float m = *std::max_element(xr, xr + n);
        float sum = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
            xr[j] = std::exp(xr[j] - m);
            sum += xr[j];
        }
        float inv = 1.0f / sum;
        for (int64_t j = 0; j < n; ++j) xr[j] *= inv;
    }
}

}  // namespace tessera
