#include "kernels/token_lanes.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/row_shares.h"

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define TESSERA_TOKEN_LANES 1
#include <immintrin.h>
#endif

namespace tessera {

#ifdef TESSERA_TOKEN_LANES
namespace {

constexpr int64_t lanes = 16;
// Tokens one chunk holds: 5 vectors of 16, the most a 5 x 5 register tile
// keeps (25 accumulators, 5 token vectors, 1 broadcast weight pair).
constexpr int64_t max_chunk_tokens = 80;
// The packed tokens of one k-block: at most the L2 of the Zen 5 this was
// tuned on (1 MiB), so 4096-wide products run in one k-block and 11008-wide
// ones in two. Longer weight streams paid more than an L1- or half-L2-sized
// panel: 320 KiB blocks ran 3-5% slower, 24-64 KiB ones 15-30% slower.
constexpr int64_t panel_block_bytes = 1 << 20;
// Register tiles a thread claims at a time (SharedChunks: the faster thread
// takes over the other's last tiles; a tile is about 7 us at 80 tokens of 4096).
constexpr int64_t tiles_a_claim = 2;

inline __m512bh as_bf16_pairs(__m512i v) { return (__m512bh)v; }

// panel[p * width + t] = the bf16 pair (x[t, 2p], x[t, 2p + 1]) for tokens t
// of the chunk (zero past `tokens`), one 32-bit word each: the layout a
// vdpbf16ps operand needs, 16 tokens to a vector. Called inside a parallel
// region; threads take blocks of 16 pairs, so none shares a cache line.
void pack_tokens(const float* x, int64_t in, int64_t tokens, int64_t width, uint32_t* panel) {
    const int64_t pairs = in / 2;
#pragma omp for schedule(static)
    for (int64_t p0 = 0; p0 < pairs; p0 += lanes) {
        const int64_t n = std::min(lanes, pairs - p0);
        for (int64_t t = 0; t < width; ++t) {
            uint32_t words[lanes] = {};
            if (t < tokens) {
                const float* row = x + t * in + 2 * p0;
                if (n == lanes) {
                    // Rounded to nearest even, as oneDNN's f32 -> bf16 reorder.
                    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + lanes), _mm512_loadu_ps(row));
                    std::memcpy(words, &h, sizeof words);
                } else {
                    for (int64_t j = 0; j < n; ++j)
                        words[j] = uint32_t(f32_to_bf16(row[2 * j])) | uint32_t(f32_to_bf16(row[2 * j + 1])) << 16;
                }
            }
            for (int64_t j = 0; j < n; ++j) panel[(p0 + j) * width + t] = words[j];
        }
    }
}

// dst[r, t] (R rows of `C * 16` floats) = start[r, t] (zero when null) +
// sum over pairs p of panel[p, t] · (w[r, 2p], w[r, 2p + 1]). Weight rows r
// lie `in` apart from w; panel and w point at the k-block's first pair.
// The whole tile lives in registers across the k-block; each weight pair is
// loaded once, broadcast, and used for all C * 16 tokens.
template <int C, int R>
void token_tile(const uint32_t* panel, int64_t pairs, const uint16_t* w, int64_t in, const float* start, float* dst) {
    constexpr int64_t width = C * lanes;
    __m512 acc[R][C];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = start ? _mm512_loadu_ps(start + r * width + c * lanes) : _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
        __m512i tokens[C];
        for (int c = 0; c < C; ++c)
            tokens[c] = _mm512_loadu_si512(reinterpret_cast<const void*>(panel + p * width + c * lanes));
        for (int r = 0; r < R; ++r) {
            uint32_t pair;
            std::memcpy(&pair, w + r * in + 2 * p, sizeof pair);
            const __m512bh weights = as_bf16_pairs(_mm512_set1_epi32(int(pair)));
            for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], as_bf16_pairs(tokens[c]), weights);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) _mm512_storeu_ps(dst + r * width + c * lanes, acc[r][c]);
}

// The product for chunks of C * 16 tokens at most, in register tiles of R
// weight rows (R * C accumulators + C token vectors + 1 broadcast <= 32
// registers).
template <int C, int R>
void product(float* y, const float* x, const uint16_t* w, int64_t out, int64_t in, const float* bias, int64_t rows,
             int64_t chunk, Epilogue epilogue) {
    constexpr int64_t width = C * lanes;
    const int64_t pairs = in / 2;
    const int64_t block_pairs_max = std::max<int64_t>(1, panel_block_bytes / (width * int64_t(sizeof(uint32_t))));
    const int64_t k_blocks = (pairs + block_pairs_max - 1) / block_pairs_max;
    const int64_t block_pairs = (pairs + k_blocks - 1) / k_blocks;
    const int64_t tiles = out / R, rest = out - tiles * R;
    // Grown to the largest product, then kept: a warm prefill allocates nothing.
    thread_local std::vector<uint32_t> panel;
    thread_local std::vector<float> partial;  // [out, width]: sums over the k-blocks so far
    // The tiles of each (row chunk, k-block), shared out among the threads.
    thread_local std::vector<SharedChunks> tile_chunks;
    const int64_t row_chunks = (rows + chunk - 1) / chunk;
    panel.resize(std::max(panel.size(), size_t(pairs * width)));
    if (k_blocks > 1) partial.resize(std::max(partial.size(), size_t(out * width)));
    tile_chunks.resize(std::max(tile_chunks.size(), size_t(row_chunks * k_blocks)));
    const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    for (int64_t i = 0; i < row_chunks * k_blocks; ++i) tile_chunks[size_t(i)].reset(tiles + rest, tiles_a_claim, threads);
    uint32_t* const packed = panel.data();
    float* const sums = partial.data();
    SharedChunks* const claims = tile_chunks.data();
#pragma omp parallel num_threads(threads)
    for (int64_t m0 = 0; m0 < rows; m0 += chunk) {
        const int64_t tokens = std::min(chunk, rows - m0);
        pack_tokens(x + m0 * in, in, tokens, width, packed);  // ends at the loop's barrier
        for (int64_t kb = 0; kb < k_blocks; ++kb) {
            const int64_t p0 = kb * block_pairs, n_pairs = std::min(block_pairs, pairs - p0);
            const bool first = kb == 0, last = kb + 1 == k_blocks;
            claims[(m0 / chunk) * k_blocks + kb].take(omp_get_thread_num(), [&](int64_t t0, int64_t t1) {
                for (int64_t t = t0; t < t1; ++t) {
                    const int64_t row0 = t < tiles ? t * R : tiles * R + (t - tiles);
                    const int n = t < tiles ? R : 1;
                    float finished[R * width];
                    const float* start = first ? nullptr : sums + row0 * width;
                    float* dst = last ? finished : sums + row0 * width;
                    const uint16_t* wr = w + row0 * in + 2 * p0;
                    if (n == R) token_tile<C, R>(packed + p0 * width, n_pairs, wr, in, start, dst);
                    else token_tile<C, 1>(packed + p0 * width, n_pairs, wr, in, start, dst);
                    if (!last) continue;
                    for (int64_t tk = 0; tk < tokens; ++tk) {
                        float* yrow = y + (m0 + tk) * out + row0;
                        for (int r = 0; r < n; ++r)
                            yrow[r] = with_epilogue(finished[r * width + tk] + (bias ? bias[row0 + r] : 0.0f), yrow[r],
                                                    epilogue);
                    }
                }
            });
            // The next k-block's tiles may go to another thread, which then
            // reads these partial sums; the next chunk repacks the panel.
#pragma omp barrier
        }
    }
}

}  // namespace

bool token_lanes_available() { return true; }

bool linear_bf16_token_lanes(float* y, const float* x, const uint16_t* w, int64_t out, int64_t in, const float* bias,
                             int64_t rows, Epilogue epilogue) {
    if (in % 2 != 0) return false;
    if (rows <= 0 || out <= 0) return true;
    // Chunks of equal size: 96 rows are two chunks of 48, not 80 and 16.
    const int64_t chunks = (rows + max_chunk_tokens - 1) / max_chunk_tokens;
    const int64_t chunk = (rows + chunks - 1) / chunks;
    switch ((chunk + lanes - 1) / lanes) {
        case 1: product<1, 8>(y, x, w, out, in, bias, rows, chunk, epilogue); break;
        case 2: product<2, 8>(y, x, w, out, in, bias, rows, chunk, epilogue); break;
        case 3: product<3, 8>(y, x, w, out, in, bias, rows, chunk, epilogue); break;
        case 4: product<4, 6>(y, x, w, out, in, bias, rows, chunk, epilogue); break;
        default: product<5, 5>(y, x, w, out, in, bias, rows, chunk, epilogue); break;
    }
    return true;
}

#else

bool token_lanes_available() { return false; }

bool linear_bf16_token_lanes(float*, const float*, const uint16_t*, int64_t, int64_t, const float*, int64_t, Epilogue) {
    return false;
}

#endif

}  // namespace tessera
