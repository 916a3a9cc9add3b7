#include "kernels/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace tessera {

namespace {

// exp(x) for x <= 0 (softmax after max subtraction), written so the compiler
// vectorizes it: 2^n * P(r) with r = x - n ln 2, |r| <= ln2/2 and a degree-6
// Taylor polynomial; relative error below 2e-7, far under the float32 noise
// of the products around it. libm's scalar expf was 15% of a ViT-Tiny pass.
inline float exp_nonpositive(float x) {
    x = std::max(x, -87.0f);
    const float n = std::floor(x * 1.44269504f + 0.5f);
    const float r = x - n * 0.693145752f - n * 1.42860677e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (int32_t(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

}  // namespace

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
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < n; ++j) {
            xr[j] = exp_nonpositive(xr[j] - m);
            sum += xr[j];
        }
        float inv = 1.0f / sum;
        for (int64_t j = 0; j < n; ++j) xr[j] *= inv;
    }
}

}  // namespace tessera
