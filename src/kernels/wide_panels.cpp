#include "kernels/wide_panels.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <utility>

#include "kernels/packed_gemm.h"
#include "kernels/simd_math.h"
#include "tessera/threads.h"

namespace tessera {

#if defined(TESSERA_SIMD_MATH_AVX512) && defined(TESSERA_SIMD_MATH_AVX2)
namespace {

constexpr int64_t wide_cols = 32;          // output columns per panel: two zmm
constexpr int max_tile_rows = 12;          // 24 accumulators + 2 panel vectors + 1 broadcast <= 32 zmm
constexpr int64_t wide_k_chunk = 256;      // a widened chunk is 32 KiB: L1 with the tile's rows of x
// Panels a thread claims at a time: the claim's panels run one k-chunk after
// another, so that chunk of x (76 rows: 76 KiB) serves all of them from L2.
constexpr int64_t wide_panels_a_claim = 4;

struct WideOut {
    const float* bias = nullptr;  // the panel's biases, or null
    bool add_previous = false;
    bool gelu = false;
};

// Lanes [0, count) of 16 for count anywhere (clamped to [0, 16]).
inline __mmask16 lanes_of(int64_t count) { return simd::first_lanes16(std::clamp<int64_t>(count, 0, 16)); }

// Writes 16 (masked) outputs: sums (+ y's current value) (+ bias), then GELU.
inline void finish16(float* y, __m512 v, __mmask16 m, const float* bias, const WideOut& o) {
    if (o.add_previous) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, y));
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias));
    if (o.gelu) v = simd::gelu_erf16(v);
    _mm512_mask_storeu_ps(y, m, v);
}

// y[R, cols] (row stride ldy) from R rows of x packed k-major (xt[p * R + r])
// times one widened panel (kc x 32 floats, k-major). Fully unrolled over R so
// that GCC keeps all 2R accumulators in registers.
template <int R>
void wide_tile(const float* xt, int64_t kc, const float* panel, float* y, int64_t ldy, int64_t cols, const WideOut& o,
               const void* const* prefetch, int64_t prefetches) {
    __m512 acc0[R], acc1[R];
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kc; ++p) {
        const __m512 b0 = _mm512_load_ps(panel + p * wide_cols);
        const __m512 b1 = _mm512_load_ps(panel + p * wide_cols + 16);
        if (p < prefetches) _mm_prefetch(static_cast<const char*>(prefetch[p]), _MM_HINT_T1);
#pragma GCC unroll 12
        for (int r = 0; r < R; ++r) {
            const __m512 a = _mm512_set1_ps(xt[p * R + r]);
            acc0[r] = _mm512_fmadd_ps(a, b0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(a, b1, acc1[r]);
        }
    }
    const __mmask16 m0 = lanes_of(cols), m1 = lanes_of(cols - 16);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
        finish16(y + r * ldy, acc0[r], m0, o.bias, o);
        finish16(y + r * ldy + 16, acc1[r], m1, o.bias ? o.bias + 16 : nullptr, o);
    }
}

using WideTile = void (*)(const float*, int64_t, const float*, float*, int64_t, int64_t, const WideOut&,
                          const void* const*, int64_t);
template <int... R>
constexpr auto wide_tiles(std::integer_sequence<int, R...>) {
    return std::array<WideTile, sizeof...(R)>{&wide_tile<R + 1>...};
}
constexpr auto wide_tile_of_rows = wide_tiles(std::make_integer_sequence<int, max_tile_rows>{});

// panel[kc x 32] f32 <- elements [k0, k0 + kc) of weight rows w[0, cols),
// two 16-column halves.
void pack_wide_chunk(const uint16_t* w, DType dtype, int64_t in, int64_t cols, int64_t k0, int64_t kc, float* panel) {
    for (int64_t h = 0; h < 2; ++h) {
        const int64_t n = std::clamp<int64_t>(cols - 16 * h, 0, 16);
        pack_16bit_columns_f32(n > 0 ? w + 16 * h * in : w, dtype, in, n, k0, kc, panel + 16 * h, wide_cols);
    }
}

// The cache lines of weight rows [c0, c0 + 32) (those below out), elements
// [k0, k0 + kc): the chunk a thread packs next, asked for (one line per k
// step of the tiles in between) while this one runs. 32 streams of 512
// bytes are too short for the hardware prefetcher, and without this packing
// waited on memory for most of its time; all 256 lines at once stalled on
// the CPU's outstanding-miss limit.
int64_t chunk_lines(const uint16_t* w, int64_t in, int64_t out, int64_t c0, int64_t k0, int64_t kc,
                    const void** lines) {
    int64_t n = 0;
    for (int64_t c = c0; c < std::min(out, c0 + wide_cols); ++c)
        for (int64_t k = k0; k < k0 + kc; k += 32) lines[n++] = w + c * in + k;
    return n;
}

}  // namespace

bool wide_panels_available() { return true; }

bool linear_wide_panels(float* y, const float* x, const uint16_t* w, DType dtype, int64_t out, int64_t in,
                        const float* bias, int64_t rows, Epilogue epilogue, float* x_packed) {
    if (rows <= 0 || out <= 0) return true;
    const int64_t panels = (out + wide_cols - 1) / wide_cols;
    const int64_t claims = (panels + wide_panels_a_claim - 1) / wide_panels_a_claim;
    // Rows in equal tiles of at most 12 (76 rows: 7 tiles of 10-11, not 6 of 12 and one of 4).
    const int64_t row_tiles = (rows + max_tile_rows - 1) / max_tile_rows;
    const auto tile_rows = [&](int64_t t) { return rows / row_tiles + (t < rows % row_tiles ? 1 : 0); };
    const int threads = rows * in * out > 65536 ? int(std::min<int64_t>(threads_count(), claims)) : 1;
#pragma omp parallel num_threads(threads)
    {
        // x once for all claims: each k-chunk, row tile by row tile, k-major
        // (tile t of the chunk at k0 starts at x_packed + k0 * rows + r0 * kc).
#pragma omp for schedule(static)
        for (int64_t k0 = 0; k0 < in; k0 += wide_k_chunk) {
            const int64_t kc = std::min(wide_k_chunk, in - k0);
            for (int64_t t = 0, r0 = 0; t < row_tiles; ++t) {
                const int64_t n = tile_rows(t);
                float* tile_x = x_packed + k0 * rows + r0 * kc;
                for (int64_t r = 0; r < n; ++r)
                    for (int64_t p = 0; p < kc; ++p) tile_x[p * n + r] = x[(r0 + r) * in + k0 + p];
                r0 += n;
            }
        }
        alignas(64) float panel[wide_k_chunk * wide_cols];
        const void* next_lines[wide_cols * wide_k_chunk / 32];
        // Claims go to whichever thread is free; each output element is still
        // summed by one thread in one order.
#pragma omp for schedule(dynamic, 1)
        for (int64_t claim = 0; claim < claims; ++claim) {
            const int64_t p0 = claim * wide_panels_a_claim, np = std::min(panels - p0, wide_panels_a_claim);
            for (int64_t k0 = 0; k0 < in; k0 += wide_k_chunk) {
                const int64_t kc = std::min(wide_k_chunk, in - k0);
                const bool last = k0 + kc == in;
                for (int64_t p = 0; p < np; ++p) {
                    const int64_t c0 = (p0 + p) * wide_cols, cols = std::min(wide_cols, out - c0);
                    pack_wide_chunk(w + c0 * in, dtype, in, cols, k0, kc, panel);
                    // The chunk this thread packs next: the claim's next panel, or its first one further on.
                    int64_t lines = 0;
                    if (p + 1 < np) lines = chunk_lines(w, in, out, c0 + wide_cols, k0, kc, next_lines);
                    else if (k0 + kc < in)
                        lines = chunk_lines(w, in, out, p0 * wide_cols, k0 + kc, std::min(wide_k_chunk, in - k0 - kc),
                                            next_lines);
                    WideOut o;
                    o.bias = last && bias ? bias + c0 : nullptr;
                    o.add_previous = epilogue == Epilogue::residual || k0 > 0;
                    o.gelu = last && epilogue == Epilogue::gelu_erf;
                    const int64_t lines_a_tile = (lines + row_tiles - 1) / row_tiles;
                    for (int64_t t = 0, r0 = 0; t < row_tiles; ++t) {
                        const int64_t n = tile_rows(t), first = std::min(lines, t * lines_a_tile);
                        wide_tile_of_rows[n - 1](x_packed + k0 * rows + r0 * kc, kc, panel, y + r0 * out + c0, out, cols,
                                                 o, next_lines + first, std::min(lines_a_tile, lines - first));
                        r0 += n;
                    }
                }
            }
        }
    }
    return true;
}
#else
bool wide_panels_available() { return false; }
bool linear_wide_panels(float*, const float*, const uint16_t*, DType, int64_t, int64_t, const float*, int64_t,
                        Epilogue, float*) {
    return false;
}
#endif

}  // namespace tessera
