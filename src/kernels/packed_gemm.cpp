#include "kernels/packed_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/onednn_linear.h"
#include "kernels/simd_math.h"
#include "tessera/threads.h"

namespace tessera {

namespace {

constexpr int tile_rows = 6;                // rows of x per register tile
constexpr int64_t x_block_bytes = 128 << 10;  // rows of x revisited per panel: about an L2's share
constexpr int64_t k_chunk = 512, k_chunk_max = 768;  // products with k <= 768 run in one pass

// An f16 panel element. f16 panel rows keep columns in natural order (the
// conversion instruction widens 8 at a time); bf16 panels are uint16_t in
// bf16_panel_order.
struct F16 {
    uint16_t bits;
};

// What a tile does with its sums: v = sums (+ y's current value) (+ bias),
// then GELU. A product split into k-chunks adds each chunk to y and applies
// bias and GELU with the last (linear_packed).
struct TileOut {
    const float* bias = nullptr;  // the panel's 16 biases, or null
    bool add_previous = false;
    bool gelu = false;
};

inline float finish1(float sum, float previous, int64_t c, const TileOut& o) {
    float v = sum + (o.add_previous ? previous : 0.0f) + (o.bias ? o.bias[c] : 0.0f);
    return o.gelu ? 0.5f * v * (1.0f + std::erf(v * float(M_SQRT1_2))) : v;
}

#ifdef TESSERA_SIMD_MATH_AVX2
inline __m256 finish8(__m256 v, const float* previous, __m256 bias, const TileOut& o) {
    if (o.add_previous) v = _mm256_add_ps(v, _mm256_loadu_ps(previous));
    v = _mm256_add_ps(v, bias);
    return o.gelu ? simd::gelu_erf8(v) : v;
}

// Row p of a panel as two vectors, columns 0-7 and 8-15.
inline void panel_row(const float* panel, int64_t p, __m256& b0, __m256& b1) {
    b0 = _mm256_loadu_ps(panel + p * packed_panel_cols);  // scratch may be 16-byte aligned
    b1 = _mm256_loadu_ps(panel + p * packed_panel_cols + 8);
}
// bf16 rows are stored in bf16_panel_order: interleaving with zero puts each
// value in the top half of a float, lanes 0-3|8-11 (low) and 4-7|12-15 (high).
inline void panel_row(const uint16_t* panel, int64_t p, __m256& b0, __m256& b1) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + p * packed_panel_cols));
    const __m256i zero = _mm256_setzero_si256();
    b0 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));
    b1 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));
}

inline void panel_row(const F16* panel, int64_t p, __m256& b0, __m256& b1) {
    const auto* row = reinterpret_cast<const __m128i*>(panel + p * packed_panel_cols);
#ifdef __F16C__
    b0 = _mm256_cvtph_ps(_mm_loadu_si128(row));
    b1 = _mm256_cvtph_ps(_mm_loadu_si128(row + 1));
#else
    alignas(32) float v[packed_panel_cols];
    for (int64_t c = 0; c < packed_panel_cols; ++c) v[c] = f16_to_f32(panel[p * packed_panel_cols + c].bits);
    b0 = _mm256_load_ps(v), b1 = _mm256_load_ps(v + 8);
#endif
}

// y[R, cols] (row stride ldy) from R rows of x (stride ldx) times one panel
// (k x 16, k-major, f32 or bf16 elements). 2R accumulators + 2 panel vectors
// + 1 broadcast <= 16 ymm registers for R <= 6.
template <int R, typename W>
void tile(const float* x, int64_t ldx, int64_t k, const W* panel, float* y, int64_t ldy, int64_t cols,
          const TileOut& o) {
    // Fully unrolled over R so that GCC keeps every accumulator in a register
    // (without the pragmas it spills all 12 to the stack on every step).
    __m256 acc0[R], acc1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
    for (int64_t p = 0; p < k; ++p) {
        __m256 b0, b1;
        panel_row(panel, p, b0, b1);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m256 a = _mm256_broadcast_ss(x + r * ldx + p);
            acc0[r] = _mm256_fmadd_ps(a, b0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(a, b1, acc1[r]);
        }
    }
    if (cols == packed_panel_cols) {
        const __m256 bias0 = o.bias ? _mm256_loadu_ps(o.bias) : _mm256_setzero_ps();
        const __m256 bias1 = o.bias ? _mm256_loadu_ps(o.bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            float* out = y + r * ldy;
            _mm256_storeu_ps(out, finish8(acc0[r], out, bias0, o));
            _mm256_storeu_ps(out + 8, finish8(acc1[r], out + 8, bias1, o));
        }
        return;
    }
    // The last panel of a matrix whose width is not a multiple of 16.
    alignas(32) float sums[packed_panel_cols];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
        _mm256_store_ps(sums, acc0[r]);
        _mm256_store_ps(sums + 8, acc1[r]);
        for (int64_t c = 0; c < cols; ++c) y[r * ldy + c] = finish1(sums[c], y[r * ldy + c], c, o);
    }
}
#else
inline float panel_at(const float* panel, int64_t p, int64_t c) { return panel[p * packed_panel_cols + c]; }
inline float panel_at(const uint16_t* panel, int64_t p, int64_t c) {
    return bf16_to_f32(panel[p * packed_panel_cols + bf16_panel_order[c]]);
}
inline float panel_at(const F16* panel, int64_t p, int64_t c) { return f16_to_f32(panel[p * packed_panel_cols + c].bits); }

template <int R, typename W>
void tile(const float* x, int64_t ldx, int64_t k, const W* panel, float* y, int64_t ldy, int64_t cols,
          const TileOut& o) {
    float sums[R][packed_panel_cols] = {};
    for (int64_t p = 0; p < k; ++p)
        for (int r = 0; r < R; ++r)
            for (int64_t c = 0; c < packed_panel_cols; ++c) sums[r][c] += x[r * ldx + p] * panel_at(panel, p, c);
    for (int r = 0; r < R; ++r)
        for (int64_t c = 0; c < cols; ++c) y[r * ldy + c] = finish1(sums[r][c], y[r * ldy + c], c, o);
}
#endif

// Rows [r0, r1) of y for one panel, in tiles of 6 rows and one shorter tail.
template <typename W>
void panel_rows(const float* x, int64_t ldx, int64_t k, const W* panel, float* y, int64_t ldy, int64_t cols,
                const TileOut& o, int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + tile_rows <= r1; r += tile_rows) tile<tile_rows, W>(x + r * ldx, ldx, k, panel, y + r * ldy, ldy, cols, o);
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    switch (r1 - r) {
        case 0: return;
        case 1: return tile<1, W>(xr, ldx, k, panel, yr, ldy, cols, o);
        case 2: return tile<2, W>(xr, ldx, k, panel, yr, ldy, cols, o);
        case 3: return tile<3, W>(xr, ldx, k, panel, yr, ldy, cols, o);
        case 4: return tile<4, W>(xr, ldx, k, panel, yr, ldy, cols, o);
        case 5: return tile<5, W>(xr, ldx, k, panel, yr, ldy, cols, o);
    }
}

// The tile outputs of one k-chunk of a product with this epilogue.
TileOut chunk_out(const float* bias, Epilogue e, bool first, bool last) {
    TileOut o;
    o.bias = last ? bias : nullptr;
    o.add_previous = e == Epilogue::residual || !first;
    o.gelu = last && e == Epilogue::gelu_erf;
    return o;
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

void pack_matrix_bf16(const float* w, int64_t out, int64_t in, uint16_t* dst) {
#pragma omp parallel for schedule(static) if (out * in > 65536)
    for (int64_t p = 0; p < panels_of(out); ++p) {
        uint16_t* panel = dst + p * in * packed_panel_cols;
        for (int64_t c = 0; c < packed_panel_cols; ++c) {
            const int64_t o = p * packed_panel_cols + c;
            for (int64_t i = 0; i < in; ++i)
                panel[i * packed_panel_cols + bf16_panel_order[c]] = o < out ? f32_to_bf16(w[o * in + i]) : 0;
        }
    }
}

WeightPlan plan_weights(int64_t out, int64_t in, DType dtype) {
    WeightPlan plan{out, in, dtype, nullptr, size_t(packed_matrix_floats(out, in)) * dtype_size(dtype)};
    // (onednn_bf16_products_pay is false wherever oneDNN has no bf16 arithmetic.)
    if (dtype == DType::bf16 && onednn_linear_chosen(DType::f32) && !onednn_bf16_products_pay()) {
        const OnednnLayout layout = onednn_weights_layout(out, in, DType::f32);
        if (layout.desc) {
            plan.dtype = DType::f32, plan.rounded_to_bf16 = true;
            plan.onednn_layout = layout.desc, plan.bytes = layout.bytes;
            return plan;
        }
    }
    if (onednn_linear_chosen(dtype)) {
        const OnednnLayout layout = onednn_weights_layout(out, in, dtype);
        if (layout.desc) plan.onednn_layout = layout.desc, plan.bytes = layout.bytes;
    }
    return plan;
}

PackedMatrix pack_weights(const WeightPlan& plan, const float* w, void* dst) {
    std::vector<float> rounded;
    if (plan.rounded_to_bf16) {
        rounded.resize(size_t(plan.out * plan.in));
        for (size_t i = 0; i < rounded.size(); ++i) rounded[i] = bf16_to_f32(f32_to_bf16(w[i]));
        w = rounded.data();
    }
    if (plan.onednn_layout)
        onednn_reorder_weights(w, plan.out, plan.in, {plan.onednn_layout, plan.bytes}, dst);
    else if (plan.dtype == DType::bf16)
        pack_matrix_bf16(w, plan.out, plan.in, static_cast<uint16_t*>(dst));
    else
        pack_matrix(w, plan.out, plan.in, static_cast<float*>(dst));
    return {dst, plan.out, plan.in, plan.dtype, plan.onednn_layout};
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

namespace {

// The element type of a matrix's panels, for the templates above.
template <typename Body>
void with_panels(const PackedMatrix& w, Body&& body) {
    if (w.dtype == DType::bf16) body(static_cast<const uint16_t*>(w.data));
    else body(static_cast<const float*>(w.data));
}

}  // namespace

void linear_packed_rows(float* y, int64_t ldy, const float* x, int64_t ldx, const PackedMatrix& w, const float* bias,
                        int64_t rows, Epilogue epilogue) {
    assert(!w.onednn_layout && "linear_packed_rows runs matrices in panels");
    with_panels(w, [&](const auto* panels) {
        for (int64_t p = 0; p < panels_of(w.out); ++p) {
            const int64_t c0 = p * packed_panel_cols;
            panel_rows(x, ldx, w.in, panels + p * w.in * packed_panel_cols, y + c0, ldy,
                       std::min(packed_panel_cols, w.out - c0),
                       chunk_out(bias ? bias + c0 : nullptr, epilogue, true, true), 0, rows);
        }
    });
}

void linear_packed(Ledger* ledger, float* y, const float* x, const PackedMatrix& w, const float* bias, int64_t rows,
                   Epilogue epilogue) {
    if (w.onednn_layout) return onednn_linear(ledger, y, x, w, bias, rows, epilogue);
    const int64_t k = w.in, panels = panels_of(w.out);
    // Long rows are split into k-chunks so that a chunk of a panel stays in
    // L1 and the rows of x it meets stay in L2 (ViT-L's 4096-wide fc2 read
    // every panel from memory for each 6 rows without it).
    const int64_t chunk = k <= k_chunk_max ? k : k_chunk;
    // Rows of x per block: the block stays in cache while every panel of the
    // thread's share passes over it.
    const int64_t block =
        std::max<int64_t>(tile_rows, x_block_bytes / (chunk * int64_t(sizeof(float))) / tile_rows * tile_rows);
    const int threads = rows * k * w.out > 65536 ? int(std::min<int64_t>(threads_count(), panels)) : 1;
    with_panels(w, [&](const auto* panels_data) {
#pragma omp parallel num_threads(threads)
        {
            // A contiguous range of panels per thread: every output element is
            // summed by one thread in one order, whatever the thread count.
            const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
            const int64_t p0 = panels * t / n, p1 = panels * (t + 1) / n;
            for (int64_t k0 = 0; k0 < k; k0 += chunk) {
                const int64_t kc = std::min(chunk, k - k0);
                for (int64_t r0 = 0; r0 < rows; r0 += block) {
                    const int64_t r1 = std::min(rows, r0 + block);
                    for (int64_t p = p0; p < p1; ++p) {
                        const int64_t c0 = p * packed_panel_cols, cols = std::min(packed_panel_cols, w.out - c0);
                        const TileOut o = chunk_out(bias ? bias + c0 : nullptr, epilogue, k0 == 0, k0 + kc == k);
                        panel_rows(x + k0, k, kc, panels_data + (p * k + k0) * packed_panel_cols, y + c0, w.out, cols,
                                   o, r0, r1);
                    }
                }
            }
        }
    });
    if (ledger) ledger->add(uint64_t(rows * k * w.out));
}

namespace {

// Elements [k0, k0 + kc) of the 16-bit weight rows w[0, cols) (row stride
// in; rows past cols read as zero) transposed into panel rows: row(k, v)
// takes panel row k as one vector of 16 values, position j holding column
// column_of[j], scalar(k, j, bits) one value at a time.
template <typename Row, typename Scalar>
void transpose_chunk_16bit(const uint16_t* w, int64_t in, int64_t cols, int64_t k0, int64_t kc,
                           const int (&column_of)[packed_panel_cols], Row row, Scalar scalar) {
    int64_t k = 0;
#ifdef TESSERA_SIMD_MATH_AVX2
    if (cols == packed_panel_cols) {
        // Two 8 x 8 transposes at once: a[j]'s low lane holds 8 elements of
        // the row for position j, its high lane those for position j + 8;
        // 16-, 32- and 64-bit interleaves leave element i of every position
        // in r[i], one panel row.
        const uint16_t* src[packed_panel_cols];
        for (int j = 0; j < int(packed_panel_cols); ++j) src[j] = w + column_of[j] * in + k0;
        for (; k + 8 <= kc; k += 8) {
            __m256i a[8], t[8], u[8];
            for (int j = 0; j < 8; ++j) {
                const __m128i low = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[j] + k));
                const __m128i high = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[j + 8] + k));
                a[j] = _mm256_inserti128_si256(_mm256_castsi128_si256(low), high, 1);
            }
            for (int j = 0; j < 8; j += 2) {
                t[j] = _mm256_unpacklo_epi16(a[j], a[j + 1]);
                t[j + 1] = _mm256_unpackhi_epi16(a[j], a[j + 1]);
            }
            for (int j = 0; j < 8; j += 4) {
                u[j] = _mm256_unpacklo_epi32(t[j], t[j + 2]);
                u[j + 1] = _mm256_unpackhi_epi32(t[j], t[j + 2]);
                u[j + 2] = _mm256_unpacklo_epi32(t[j + 1], t[j + 3]);
                u[j + 3] = _mm256_unpackhi_epi32(t[j + 1], t[j + 3]);
            }
            for (int i = 0; i < 4; ++i) {
                row(k + 2 * i, _mm256_unpacklo_epi64(u[i], u[i + 4]));
                row(k + 2 * i + 1, _mm256_unpackhi_epi64(u[i], u[i + 4]));
            }
        }
    }
#endif
    for (; k < kc; ++k)
        for (int j = 0; j < int(packed_panel_cols); ++j) {
            const int c = column_of[j];
            scalar(k, j, c < cols ? w[c * in + k0 + k] : uint16_t(0));
        }
}

constexpr int natural_order[packed_panel_cols] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

// panel[kc x 16] <- the chunk's panel rows in W's element order (F16:
// natural; bf16: bf16_panel_order, its own inverse).
template <typename W>
void pack_chunk_16bit(const uint16_t* w, int64_t in, int64_t cols, int64_t k0, int64_t kc, W* panel) {
    transpose_chunk_16bit(
        w, in, cols, k0, kc, std::is_same_v<W, F16> ? natural_order : bf16_panel_order,
#ifdef TESSERA_SIMD_MATH_AVX2
        [&](int64_t k, __m256i v) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(panel + k * packed_panel_cols), v);
        },
#else
        [](int64_t, int) {},
#endif
        [&](int64_t k, int j, uint16_t bits) { panel[k * packed_panel_cols + j] = W{bits}; });
}

}  // namespace

void pack_16bit_columns_f32(const uint16_t* w, DType dtype, int64_t in, int64_t cols, int64_t k0, int64_t kc,
                            float* panel, int64_t ld) {
    const bool f16 = dtype == DType::f16;
    // bf16 rows come out of the transpose in bf16_panel_order, so that
    // interleaving with zero (one instruction per 8 values) widens them to
    // columns 0-7 and 8-15; f16 rows in natural order for vcvtph2ps.
    transpose_chunk_16bit(
        w, in, cols, k0, kc, f16 ? natural_order : bf16_panel_order,
#ifdef TESSERA_SIMD_MATH_AVX2
        [&](int64_t k, __m256i v) {
            float* row = panel + k * ld;
            if (!f16) {
                const __m256i zero = _mm256_setzero_si256();
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(row), _mm256_unpacklo_epi16(zero, v));
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + 8), _mm256_unpackhi_epi16(zero, v));
                return;
            }
#ifdef __F16C__
            _mm256_storeu_ps(row, _mm256_cvtph_ps(_mm256_castsi256_si128(v)));
            _mm256_storeu_ps(row + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(v, 1)));
#else
            alignas(32) uint16_t bits[packed_panel_cols];
            _mm256_store_si256(reinterpret_cast<__m256i*>(bits), v);
            for (int j = 0; j < int(packed_panel_cols); ++j) row[j] = f16_to_f32(bits[j]);
#endif
        },
#else
        [](int64_t, int) {},
#endif
        [&](int64_t k, int j, uint16_t bits) {
            // Position j holds column j of an f16 row, bf16_panel_order[j] of a bf16 one.
            if (f16) panel[k * ld + j] = f16_to_f32(bits);
            else panel[k * ld + bf16_panel_order[j]] = bf16_to_f32(bits);
        });
}

namespace {

// Panels per unit of work handed to a thread by linear_packing_on_the_fly.
constexpr int64_t panels_per_group = 4;

template <typename W>
void linear_packing_16bit(float* y, const float* x, const uint16_t* w, int64_t out, int64_t in, const float* bias,
                          int64_t rows, Epilogue epilogue) {
    const int64_t panels = panels_of(out), chunk = in <= k_chunk_max ? in : k_chunk;
    const int64_t groups = (panels + panels_per_group - 1) / panels_per_group;
    const int threads = rows * in * out > 65536 ? int(std::min<int64_t>(threads_count(), groups)) : 1;
#pragma omp parallel num_threads(threads)
    {
        alignas(64) W panel[k_chunk_max * packed_panel_cols];  // one panel's k-chunk: L1-sized
        // Groups of panels go to whichever thread is free (the two vCPUs of
        // the reference machine run at different speeds: a static split left
        // one waiting). Each panel is still summed by one thread in one
        // order, so results do not depend on the thread count.
#pragma omp for schedule(dynamic, 1)
        for (int64_t g = 0; g < groups; ++g)
            for (int64_t p = g * panels_per_group; p < std::min(panels, (g + 1) * panels_per_group); ++p) {
                // The panel's k-chunks in order: its 16 weight rows are read
                // as 16 sequential streams (chunk by chunk across panels, each
                // chunk's first touch waited on memory: packing took 14% of
                // the time at 75 rows, 9% so).
                const int64_t c0 = p * packed_panel_cols, cols = std::min(packed_panel_cols, out - c0);
                for (int64_t k0 = 0; k0 < in; k0 += chunk) {
                    const int64_t kc = std::min(chunk, in - k0);
                    pack_chunk_16bit<W>(w + c0 * in, in, cols, k0, kc, panel);
                    const TileOut o = chunk_out(bias ? bias + c0 : nullptr, epilogue, k0 == 0, k0 + kc == in);
                    panel_rows(x + k0, in, kc, static_cast<const W*>(panel), y + c0, out, cols, o, 0, rows);
                }
            }
    }
}

}  // namespace

void linear_packing_on_the_fly(Ledger* ledger, float* y, const float* x, const uint16_t* w, DType dtype, int64_t out,
                               int64_t in, const float* bias, int64_t rows, Epilogue epilogue) {
    assert((dtype == DType::bf16 || dtype == DType::f16) && "linear_packing_on_the_fly takes 16-bit weights");
    if (dtype == DType::f16) linear_packing_16bit<F16>(y, x, w, out, in, bias, rows, epilogue);
    else linear_packing_16bit<uint16_t>(y, x, w, out, in, bias, rows, epilogue);
    if (ledger) ledger->add(uint64_t(rows * in * out));
}

}  // namespace tessera
