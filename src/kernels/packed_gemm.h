// Linear layers on weights packed once at load (the inference-engine way:
// ONNX Runtime prepacks, llama.cpp repacks). The [out, in] matrix is stored
// as panels of 16 output columns, each panel in k-major order, so the 6 x 16
// register-tile microkernel streams one panel contiguously while it reuses
// six rows of x from cache. Bias, exact GELU or residual add run on the tile
// while it is still in registers: no second pass over the output.
#pragma once
#include <cstdint>

#include "kernels/gemm.h"
#include "tessera/flops.h"
#include "tessera/tensor.h"

namespace tessera {

// Output columns per packed panel.
constexpr int64_t packed_panel_cols = 16;

// A [out, in] weight matrix in panel layout: ceil(out / 16) panels of
// in x 16 elements, columns past `out` in the last panel zero. Elements are
// f32, or bf16 (the weights of a `--dtype bf16` run: half the memory and
// bandwidth; products still accumulate in f32). A bf16 panel row stores its
// 16 columns in the order bf16_panel_order so that one 32-byte load and two
// interleaves with zero widen it to columns 0-7 and 8-15.
//
// A model's matrices may instead be in oneDNN's reordered layout
// (onednn_layout set, kernels/onednn_linear.h): pack_weights chooses, and
// linear_packed runs either.
struct PackedMatrix {
    const void* data = nullptr;
    int64_t out = 0, in = 0;
    DType dtype = DType::f32;            // f32 or bf16
    const void* onednn_layout = nullptr;  // oneDNN's weights layout, or null for panels
};

// Position of column c within a bf16 panel row.
constexpr int bf16_panel_order[packed_panel_cols] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};

// Elements (of the matrix's dtype) in the panel layout.
int64_t packed_matrix_floats(int64_t out, int64_t in);

// dst (packed_matrix_floats(out, in) floats) <- w [out, in].
void pack_matrix(const float* w, int64_t out, int64_t in, float* dst);

// The same in bf16, each weight rounded to the nearest bf16 (ties to even).
void pack_matrix_bf16(const float* w, int64_t out, int64_t in, uint16_t* dst);

// How a model's weight matrix will be stored: oneDNN's reordered layout
// where onednn_linear_chosen(dtype) and oneDNN has a fast matmul for it,
// else panels of `dtype`. bf16 asked for where oneDNN runs f32 but its bf16
// products do not pay (onednn_bf16_products_pay): the weights rounded to
// bf16 and stored in oneDNN's f32 layout (dtype f32, rounded_to_bf16).
// bytes: what pack_weights writes.
struct WeightPlan {
    int64_t out = 0, in = 0;
    DType dtype = DType::f32;
    const void* onednn_layout = nullptr;
    size_t bytes = 0;
    bool rounded_to_bf16 = false;
};
WeightPlan plan_weights(int64_t out, int64_t in, DType dtype);

// dst (plan.bytes, 64-byte aligned) <- w [out, in] f32 as planned.
PackedMatrix pack_weights(const WeightPlan& plan, const float* w, void* dst);

// The same from [out, in] rows ld floats apart (one head of a fused buffer), single-threaded.
void pack_matrix_strided(const float* w, int64_t ld, int64_t out, int64_t in, float* dst);

// Packs the transpose: W[o, i] = src[i, o], src [in, out] with row stride ld
// (attention's values: out = head_dim, in = keys). Single-threaded.
void pack_matrix_transposed(const float* src, int64_t ld, int64_t out, int64_t in, float* dst);

// Single-threaded core of linear_packed with explicit row strides (ldy for
// y, ldx for x), for matrices in panels; counts no MACs.
void linear_packed_rows(float* y, int64_t ldy, const float* x, int64_t ldx, const PackedMatrix& w, const float* bias,
                        int64_t rows, Epilogue epilogue = Epilogue::none);

// y[rows, w.out] = x[rows, w.in] · W^T + bias, then the epilogue
// (Epilogue::residual: y += ...). Row strides are w.in and w.out. Parallel
// over output panels; every output element is computed by one thread in a
// fixed order, so results do not depend on the thread count. A matrix in
// oneDNN's layout runs oneDNN's matmul instead. Adds rows * in * out MACs.
void linear_packed(Ledger* ledger, float* y, const float* x, const PackedMatrix& w, const float* bias, int64_t rows,
                   Epilogue epilogue = Epilogue::none);

// The same for a 16-bit (f16 or bf16) [out, in] matrix as stored, not
// packed at load (the LLaVA decoder's weights, read in place): each thread
// packs one panel's k-chunk at a time into an L1-sized buffer and runs every
// row of x over it, so each weight is read from memory once and nothing
// widened is written back. Groups of panels go to whichever thread is free;
// results do not depend on the thread count. Adds rows * in * out MACs.
void linear_packing_on_the_fly(Ledger* ledger, float* y, const float* x, const uint16_t* w, DType dtype, int64_t out,
                               int64_t in, const float* bias, int64_t rows, Epilogue epilogue = Epilogue::none);

// panel[kc x 16] (row stride ld floats) <- elements [k0, k0 + kc) of the
// f16 or bf16 weight rows w[0, cols) (row stride in), transposed into panel
// rows with columns in natural order and widened to f32; columns past cols
// (at most 16) are zero. For kernels in other files (wide_panels.cpp);
// single-threaded.
void pack_16bit_columns_f32(const uint16_t* w, DType dtype, int64_t in, int64_t cols, int64_t k0, int64_t kc,
                            float* panel, int64_t ld);

}  // namespace tessera
