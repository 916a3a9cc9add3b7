// The f32 products of linear_w on 16-bit weights (the LLaVA decoder's,
// read in place) for CPUs with 512-bit vectors: each thread takes 4 panels
// of 32 output columns at a time and, for each k-chunk of 256, transposes
// and widens one panel's weights into an L1-sized f32 buffer and runs every
// row of x over it in a 12 x 32 register tile of FMAs (24 zmm accumulators).
// x is packed once per call, k-chunk by k-chunk and tile by tile, so a
// tile's broadcasts read consecutive floats. The next chunk's weight lines
// are asked for one per k step of the current chunk's tiles.
//
// On a Sapphire Rapids VM without AMX, whose bf16 dot products are no faster
// than f32 FMAs, LLaVA-7B's products at 76 rows (a 64-token VTC-CLS prefill)
// ran at 178-214 GFLOP/s here against 127-139 in bf16 token lanes
// (token_lanes.h) and 109-115 in 16-column AVX2 panels packed on the fly,
// and at 588 rows (the full prefill) level with or above converted panels
// and oneDNN's f32 matmul (215-251 against 181-243).
#pragma once
#include <cstdint>

#include "kernels/gemm.h"
#include "tessera/tensor.h"

namespace tessera {

// Whether this build has the kernel (compiled for AVX-512).
bool wide_panels_available();

// y[rows, out] = x[rows, in] · W^T + bias, then the epilogue, W [out, in]
// f16 or bf16 as stored. Every output element is summed by one thread in
// one order (k-chunks of 256 in turn), so results do not depend on the
// thread count. x_packed: rows * in floats of scratch (x is packed there
// once, in the order the tiles read it). Returns false, doing nothing, where the build lacks the
// kernel. Counts no MACs: the caller does.
bool linear_wide_panels(float* y, const float* x, const uint16_t* w, DType dtype, int64_t out, int64_t in,
                        const float* bias, int64_t rows, Epilogue epilogue, float* x_packed);

}  // namespace tessera
