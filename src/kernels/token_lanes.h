// A bf16 product for a few dozen rows of x (a pruned LLaVA prefill: 64
// visual tokens plus the prompt) that reads PyTorch's [out, in] weights as
// stored. oneDNN's bf16 matmul repacks such weights on every call, which at
// 76 rows cost a fifth of its time. Here the rows of x (tokens) lie across
// the vector lanes instead, packed once per call (x is small), and each pair
// of weights is broadcast from its stored row into a dot-product instruction
// (AVX512-BF16 vdpbf16ps), so no weight is ever moved except into a register.
#pragma once
#include <cstdint>

#include "kernels/gemm.h"

namespace tessera {

// Whether this build has the kernel (compiled for AVX512-BF16).
bool token_lanes_available();

// y[rows, out] = x[rows, in] · W^T + bias, epilogue as linear(), with W bf16
// [out, in] read in place and x rounded to bf16 (f32 accumulation, as
// oneDNN's bf16 matmul). Rows are taken 80 at most at a time; each such
// chunk reads the weights once. Returns false, doing nothing, where the build
// lacks the kernel or `in` is odd (the kernel reads weights in pairs). Counts
// no MACs: linear_w, its caller, does.
bool linear_bf16_token_lanes(float* y, const float* x, const uint16_t* w, int64_t out, int64_t in, const float* bias,
                             int64_t rows, Epilogue epilogue);

}  // namespace tessera
