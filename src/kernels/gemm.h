// Matrix products through oneDNN. Primitives are created once per shape (and
// layout, epilogue) and cached for the life of the process; creating one
// costs far more than running it at ViT sizes.
#pragma once
#include <cstdint>

#include "tessera/flops.h"

namespace tessera {

enum class Epilogue : uint8_t {
    none,       // c = a·b (+ bias)
    gelu_erf,   // c = gelu(a·b + bias), exact erf GELU
    residual,   // c += a·b + bias  (c holds the residual stream)
};

// A strided, batched product c[i] = alpha * a[i]·b[i] (+ bias) for i < batch.
// Strides are in elements: {batch, row, column}. a is [m, k], b is [k, n],
// c is [m, n]. Any stride may express a transpose or an interleaved layout
// (e.g. one head of a fused qkv buffer) without copying.
struct GemmDesc {
    int64_t batch = 1, m = 0, k = 0, n = 0;
    int64_t a_stride[3] = {0, 0, 1};
    int64_t b_stride[3] = {0, 0, 1};
    int64_t c_stride[3] = {0, 0, 1};
    float alpha = 1.0f;
    bool bias = false;  // bias[n] broadcast over rows
    Epilogue epilogue = Epilogue::none;
};

// Adds batch*m*k*n MACs to the ledger (when given).
void gemm(Ledger* ledger, const GemmDesc& desc, const float* a, const float* b, const float* bias, float* c);

// y[rows, out] = x[rows, in] · W^T + bias, W stored as PyTorch does: [out, in].
void linear(Ledger* ledger, float* y, const float* x, const float* weight, const float* bias, int64_t rows,
            int64_t in, int64_t out, Epilogue epilogue = Epilogue::none);

// Number of distinct primitives created so far (tests check the cache works).
int64_t gemm_primitives_created();

}  // namespace tessera
