// Linear layers through oneDNN's matmul with the weights reordered once, at
// load, into the blocked layout oneDNN's own kernels read (f32, or bf16 with
// activations converted to bf16 and f32 accumulation). This is the fast path
// on CPUs where oneDNN has AVX-512 or AMX kernels: on such a host its matmul
// runs ViT layers about twice as fast as the AVX2 packed kernel
// (docs/performance.md). On AVX2-only CPUs the packed kernel is as fast and
// is used instead.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/gemm.h"
#include "tessera/flops.h"
#include "tessera/tensor.h"

namespace tessera {

struct PackedMatrix;

// Whether weights in `dtype` should be reordered for oneDNN on this CPU:
// f32 when oneDNN's best ISA is AVX-512 or better, bf16 when it has bf16
// arithmetic (AVX512-BF16, AMX), and only if oneDNN creates a matmul for
// them. TESSERA_LINEAR=packed, =onednn or =onednn-f32 overrides the choice
// (tests and benchmarks; onednn-f32: see onednn_bf16_products_pay); a forced oneDNN path still falls back to the packed kernel
// where oneDNN has no matmul for the dtype.
bool onednn_linear_chosen(DType dtype);

// Whether a bf16 run's products should be oneDNN's bf16 matmul rather than
// its f32 one over weights rounded to bf16 at load. Yes on AMX. Without AMX
// it depends on the CPU: AVX512-BF16's dot products doubled the f32 rate on
// a 2-core Zen 5, but on a 2-core Sapphire Rapids VM (no AMX) oneDNN's bf16
// matmul ran 0.7x as fast as its f32 one. So it is measured, once per
// process: the faster of 6 alternated runs of each on a ViT-B layer's shape
// (about 20 ms), bf16 chosen only if it takes under onednn_bf16_pays_below
// of the f32 time; the margin keeps a noisy host from flipping the choice.
// TESSERA_LINEAR=onednn forces yes, =onednn-f32 and =packed no.
constexpr double onednn_bf16_pays_below = 0.85;
bool onednn_bf16_products_pay();

// Whether oneDNN's bf16 products run on AMX tiles here (Sapphire Rapids and
// later), several times the rate of AVX512-BF16 code.
bool onednn_bf16_on_amx();

// The layout of a [out, in] matrix in oneDNN's preferred weights format for
// `dtype` (an opaque pointer that lives as long as the process) and its size
// in bytes; null when oneDNN creates no matmul for it.
struct OnednnLayout {
    const void* desc = nullptr;
    size_t bytes = 0;
};
OnednnLayout onednn_weights_layout(int64_t out, int64_t in, DType dtype);

// dst (layout.bytes, 64-byte aligned) <- w [out, in] f32 in that layout
// (and its data type: the reorder converts to bf16 where the layout is bf16).
void onednn_reorder_weights(const float* w, int64_t out, int64_t in, const OnednnLayout& layout, void* dst);

// y[rows, w.out] = x[rows, w.in] · W^T + bias, then the epilogue, for a
// matrix in oneDNN's layout (w.onednn_layout set). Adds rows * in * out MACs.
void onednn_linear(Ledger* ledger, float* y, const float* x, const PackedMatrix& w, const float* bias, int64_t rows,
                   Epilogue epilogue);

// The same for bf16 weights on oneDNN with x already in bf16 (e.g. from
// layer_norm_bf16), and y in f32 or, for a product whose output only feeds
// another bf16 product (fc1 -> fc2), in bf16: no conversion passes.
void onednn_linear_bf16_io(Ledger* ledger, void* y, DType y_type, const uint16_t* x, const PackedMatrix& w,
                           const float* bias, int64_t rows, Epilogue epilogue);

// y[rows, out] = x[rows, in] · W^T + bias, then the epilogue, for bf16
// weights stored as PyTorch does ([out, in]) and read in place: x converted
// to bf16, oneDNN's bf16 matmul (AMX where the CPU has it), f32 accumulation
// and output. The LLaVA decoder's prefill with 16-bit weights on CPUs where
// onednn_linear_chosen(DType::bf16). Returns false, having done nothing,
// where oneDNN has no bf16 matmul for the shape. Adds nothing to a ledger
// (the caller counts).
bool onednn_linear_bf16_in_place(float* y, const float* x, const uint16_t* w, int64_t out, int64_t in,
                                 const float* bias, int64_t rows, Epilogue epilogue);

// Linear-layer products held in their cache now (at most
// onednn_primitive_cache_capacity; tests check the bound).
int64_t onednn_products_cached();

}  // namespace tessera
