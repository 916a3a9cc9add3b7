#include "kernels/packed_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/simd_math.h"
#include "tessera/threads.h"

namespace tessera {

namespace {

constexpr int tile_rows = 6;                // rows of x per register tile
constexpr int64_t x_block_bytes = 128 << 10;  // rows of x revisited per panel: about an L2's share

inline float epilogue1(float v, float previous, Epilogue e) {
    switch (e) {
        case Epilogue::none: return v;
        case Epilogue::gelu_erf: return 0.5f * v * (1.0f + std::erf(v * float(M_SQRT1_2)));
        case Epilogue::residual: return previous + v;
    }
    return v;
}

#ifdef TESSERA_SIMD_MATH_AVX2
inline __m256 epilogue8(__m256 v, const float* previous, Epilogue e) {
    if (e == Epilogue::gelu_erf) return simd::gelu_erf8(v);
    if (e == Epilogue::residual) return _mm256_add_ps(v, _mm256_loadu_ps(previous));
    return v;
}

// y[R, cols] (row stride ldy) from R rows of x (stride k) times one panel
// (k x 16, k-major). 2R accumulators + 2 panel vectors + 1 broadcast <= 16
// ymm registers for R <= 6.
template <int R>
void tile(const float* x, int64_t ldx, int64_t k, const float* panel, float* y, int64_t ldy, int64_t cols,
          const float* bias, Epilogue e) {
    // Fully unrolled over R so that GCC keeps every accumulator in a register
    // (without the pragmas it spills all 12 to the stack on every step).
    __m256 acc0[R], acc1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
    for (int64_t p = 0; p < k; ++p) {
        const __m256 b0 = _mm256_loadu_ps(panel + p * packed_panel_cols);  // scratch may be 16-byte aligned
        const __m256 b1 = _mm256_loadu_ps(panel + p * packed_panel_cols + 8);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m256 a = _mm256_broadcast_ss(x + r * ldx + p);
            acc0[r] = _mm256_fmadd_ps(a, b0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(a, b1, acc1[r]);
        }
    }
    if (cols == packed_panel_cols) {
        const __m256 bias0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        const __m256 bias1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            float* out = y + r * ldy;
            _mm256_storeu_ps(out, epilogue8(_mm256_add_ps(acc0[r], bias0), out, e));
            _mm256_storeu_ps(out + 8, epilogue8(_mm256_add_ps(acc1[r], bias1), out + 8, e));
        }
        return;
    }
    // The last panel of a matrix whose width is not a multiple of 16.
    alignas(32) float sums[packed_panel_cols];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
        _mm256_store_ps(sums, acc0[r]);
        _mm256_store_ps(sums + 8, acc1[r]);
        for (int64_t c = 0; c < cols; ++c) {
            float* out = y + r * ldy + c;
            *out = epilogue1(sums[c] + (bias ? bias[c] : 0.0f), *out, e);
        }
    }
}
#else
template <int R>
void tile(const float* x, int64_t ldx, int64_t k, const float* panel, float* y, int64_t ldy, int64_t cols,
          const float* bias, Epilogue e) {
    float sums[R][packed_panel_cols] = {};
    for (int64_t p = 0; p < k; ++p)
        for (int r = 0; r < R; ++r)
            for (int64_t c = 0; c < packed_panel_cols; ++c) sums[r][c] += x[r * ldx + p] * panel[p * packed_panel_cols + c];
    for (int r = 0; r < R; ++r)
        for (int64_t c = 0; c < cols; ++c) {
            float* out = y + r * ldy + c;
            *out = epilogue1(sums[r][c] + (bias ? bias[c] : 0.0f), *out, e);
        }
}
#endif

// Rows [r0, r1) of y for one panel, in tiles of 6 rows and one shorter tail.
void panel_rows(const float* x, int64_t ldx, int64_t k, const float* panel, float* y, int64_t ldy, int64_t cols,
                const float* bias, Epilogue e, int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + tile_rows <= r1; r += tile_rows)
        tile<tile_rows>(x + r * ldx, ldx, k, panel, y + r * ldy, ldy, cols, bias, e);
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    switch (r1 - r) {
        case 0: return;
        case 1: return tile<1>(xr, ldx, k, panel, yr, ldy, cols, bias, e);
        case 2: return tile<2>(xr, ldx, k, panel, yr, ldy, cols, bias, e);
        case 3: return tile<3>(xr, ldx, k, panel, yr, ldy, cols, bias, e);
        case 4: return tile<4>(xr, ldx, k, panel, yr, ldy, cols, bias, e);
        case 5: return tile<5>(xr, ldx, k, panel, yr, ldy, cols, bias, e);
    }
}

int64_t panels_of(int64_t out) { return (out + packed_panel_cols - 1) / packed_panel_cols; }

}  // namespace

int64_t packed_matrix_floats(int64_t out, int64_t in) {
    return (out + packed_panel_cols - 1) / packed_panel_cols * packed_panel_cols * in;
}

void pack_matrix_strided(const float* w, int64_t ld, int64_t out, int64_t in, float* dst) {
    for (int64_t p = 0; p < panels_of(out); ++p) {
        float* panel = dst + p * in * packed_panel_cols;
        for (int64_t c = 0; c < packed_panel_cols; ++c) {
            const int64_t o = p * packed_panel_cols + c;
            for (int64_t i = 0; i < in; ++i) panel[i * packed_panel_cols + c] = o < out ? w[o * ld + i] : 0.0f;
        }
    }
}

void pack_matrix(const float* w, int64_t out, int64_t in, float* dst) {
#pragma omp parallel for schedule(static) if (out * in > 65536)
    for (int64_t p = 0; p < panels_of(out); ++p)
        pack_matrix_strided(w + p * packed_panel_cols * in, in, std::min(packed_panel_cols, out - p * packed_panel_cols),
                            in, dst + p * in * packed_panel_cols);
}

void pack_matrix_transposed(const float* src, int64_t ld, int64_t out, int64_t in, float* dst) {
    for (int64_t p = 0; p < panels_of(out); ++p) {
        float* panel = dst + p * in * packed_panel_cols;
        const int64_t c0 = p * packed_panel_cols, cols = std::min(packed_panel_cols, out - c0);
        for (int64_t i = 0; i < in; ++i) {
            std::memcpy(panel + i * packed_panel_cols, src + i * ld + c0, size_t(cols) * sizeof(float));
            std::fill(panel + i * packed_panel_cols + cols, panel + (i + 1) * packed_panel_cols, 0.0f);
        }
    }
}

void linear_packed_rows(float* y, int64_t ldy, const float* x, int64_t ldx, const PackedMatrix& w, const float* bias,
                        int64_t rows, Epilogue epilogue) {
    for (int64_t p = 0; p < panels_of(w.out); ++p) {
        const int64_t c0 = p * packed_panel_cols;
        panel_rows(x, ldx, w.in, w.data + p * w.in * packed_panel_cols, y + c0, ldy,
                   std::min(packed_panel_cols, w.out - c0), bias ? bias + c0 : nullptr, epilogue, 0, rows);
    }
}

void linear_packed(Ledger* ledger, float* y, const float* x, const PackedMatrix& w, const float* bias, int64_t rows,
                   Epilogue epilogue) {
    const int64_t k = w.in, panels = (w.out + packed_panel_cols - 1) / packed_panel_cols;
    // Rows of x per block: the block stays in cache while every panel of the
    // thread's share passes over it.
    const int64_t block = std::max<int64_t>(tile_rows, x_block_bytes / (k * int64_t(sizeof(float))) / tile_rows * tile_rows);
    const int threads = rows * k * w.out > 65536 ? int(std::min<int64_t>(threads_count(), panels)) : 1;
#pragma omp parallel num_threads(threads)
    {
        // A contiguous range of panels per thread: its weights are read once per block of rows.
        const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
        const int64_t p0 = panels * t / n, p1 = panels * (t + 1) / n;
        for (int64_t r0 = 0; r0 < rows; r0 += block) {
            const int64_t r1 = std::min(rows, r0 + block);
            for (int64_t p = p0; p < p1; ++p) {
                const int64_t c0 = p * packed_panel_cols, cols = std::min(packed_panel_cols, w.out - c0);
                panel_rows(x, k, k, w.data + p * k * packed_panel_cols, y + c0, w.out, cols, bias ? bias + c0 : nullptr,
                           epilogue, r0, r1);
            }
        }
    }
    if (ledger) ledger->add(uint64_t(rows * k * w.out));
}

}  // namespace tessera
