// Matrix products through oneDNN. Primitives are created once per shape (and
// layout, epilogue) and cached (creating one costs far more than running it
// at ViT sizes), the least recently used dropped beyond
// onednn_primitive_cache_capacity (kernels/primitive_cache.h).
#pragma once
#include <cmath>
#include <cstdint>

#include "tessera/flops.h"
#include "tessera/tensor.h"

namespace tessera {

enum class Epilogue : uint8_t {
    none,       // c = a·b (+ bias)
    gelu_erf,   // c = gelu(a·b + bias), exact erf GELU
    residual,   // c += a·b + bias  (c holds the residual stream)
};

// One output of a product after its epilogue: v is a·b + bias, previous the
// value c held (read by the residual epilogue only). For kernels that finish
// their outputs one at a time.
inline float with_epilogue(float v, float previous, Epilogue e) {
    switch (e) {
        case Epilogue::none: return v;
        case Epilogue::gelu_erf: return 0.5f * v * (1.0f + std::erf(v * float(M_SQRT1_2)));
        case Epilogue::residual: return previous + v;
    }
    return v;
}

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
    DType operands = DType::f32;  // a and b: f32, or bf16 (gemm_bf16); c is f32
};

// Adds batch*m*k*n MACs to the ledger (when given).
void gemm(Ledger* ledger, const GemmDesc& desc, const float* a, const float* b, const float* bias, float* c);

// The same with a and b in bf16 (f32 accumulation and output; oneDNN's bf16
// kernels where the CPU has bf16 arithmetic). desc.operands must be bf16.
void gemm_bf16(Ledger* ledger, const GemmDesc& desc, const uint16_t* a, const uint16_t* b, const float* bias, float* c);

// y[rows, out] = x[rows, in] · W^T + bias, W stored as PyTorch does: [out, in].
void linear(Ledger* ledger, float* y, const float* x, const float* weight, const float* bias, int64_t rows,
            int64_t in, int64_t out, Epilogue epilogue = Epilogue::none);

// A [out, in] weight matrix (PyTorch layout) in f32, f16 or bf16, read in
// place from the model's buffer.
struct WeightRef {
    const void* data = nullptr;
    DType dtype = DType::f32;
    int64_t out = 0, in = 0;
    bool packed = false;  // f32 packed for linear_packed (packed_gemm.h): panels, or
    const void* onednn_layout = nullptr;  // oneDNN's reordered layout when this is set
};

// Output rows of a 16-bit weight converted to f32 at a time by linear_w.
constexpr int64_t linear_w_panel_rows = 512;
// linear_w's scratch for 16-bit weights and rows >= 8: one converted panel,
// or 512 rows of x packed for the wide panels.
int64_t linear_w_scratch_floats(int64_t in);

// y[rows, w.out] = x[rows, w.in] · W^T + bias, epilogue as linear(); y must
// not alias x. f32 runs linear(). 16-bit weights are read as stored:
// - rows < 8: a GEMV-style loop reads the weights once: bf16 weights, where
//   the build has AVX512-BF16 and scratch is given, through the bf16 dot
//   product with x rounded to bf16 (linear_w_gemv_in_bf16); otherwise
//   widened in registers against x in f32;
// - where linear_w_in_bf16: bf16 products (x rounded to bf16, f32
//   accumulation): up to 128 rows without AMX the token-lanes kernel
//   (token_lanes.h), else one oneDNN bf16 product;
// - otherwise f32 products: the 512-bit wide panels where the build has them
//   (wide_panels.h, x packed into scratch, 512 rows at a time); else, while x
//   is at most 4 MiB (and the build has the AVX2 tiles), panels packed on the
//   fly in cache (linear_packing_on_the_fly), and beyond that each 512-row
//   panel converted into scratch and multiplied by oneDNN in f32.
// Scratch: linear_w_scratch_floats(w.in) floats, needed with rows >= 8 (may
// be null below, where bf16 weights then take the widening loop). Adds
// rows * in * out MACs.
void linear_w(Ledger* ledger, float* y, const float* x, const WeightRef& w, const float* bias, int64_t rows,
              Epilogue epilogue = Epilogue::none, float* scratch = nullptr);

// Whether linear_w runs this product in bf16 (rounding x to bf16): bf16
// weights, rows >= 8, a CPU with bf16 arithmetic (onednn_linear_chosen)
// whose bf16 products pay (AMX, or onednn_bf16_products_pay).
bool linear_w_in_bf16(DType dtype, int64_t rows);

// Whether linear_w's GEMV (rows < 8, scratch given) rounds x to bf16: bf16
// weights in a build with AVX512-BF16.
bool linear_w_gemv_in_bf16(DType dtype);

// linear_w's path for large products on 16-bit weights, callable for any
// size (benchmarks compare it with linear_packing_on_the_fly): each 512-row
// panel converted into scratch, then oneDNN's f32 matmul.
void linear_w_converted(Ledger* ledger, float* y, const float* x, const WeightRef& w, const float* bias, int64_t rows,
                        Epilogue epilogue, float* scratch);

// Number of primitives created so far, and held now (tests check the cache
// works and stays within onednn_primitive_cache_capacity).
int64_t gemm_primitives_created();
int64_t gemm_primitives_cached();

}  // namespace tessera
