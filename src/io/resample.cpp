// A bit-exact port of Pillow's Image.resize (libImaging/Resample.c for the
// convolution filters, libImaging/Geometry.c ImagingScaleAffine for NEAREST),
// kept apart from the decoders so that config readers and benchmarks need no
// image library.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "io/image.h"
#include "tessera/error.h"

namespace tessera {

namespace {

// ---------------------------------------------------------------- Pillow resampling

// libImaging/Resample.c: weights are turned into fixed point with this many
// fractional bits (32 - 8 - 2), leaving room for 8-bit pixels and overshoot.
constexpr int precision_bits = 32 - 8 - 2;

struct Filter {
    double (*weight)(double x);
    double support;
};

double bilinear_weight(double x) {  // Resample.c bilinear_filter: a triangle
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

double bicubic_weight(double x) {  // Resample.c bicubic_filter: Keys' cubic, a = -0.5
    constexpr double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

// Per output position: the first input index, how many inputs contribute, and
// their fixed-point weights (ksize slots each).
struct Coefficients {
    int ksize = 0;
    std::vector<int> first;
    std::vector<int> count;
    std::vector<int32_t> weights;
};

// Resample.c precompute_coeffs + normalize_coeffs_8bpc, for the whole input
// range (box = (0, in_size)).
Coefficients precompute_coefficients(int in_size, int out_size, const Filter& filter) {
    const double scale = double(in_size) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;  // antialias when downscaling
    const double support = filter.support * filterscale;
    Coefficients c;
    c.ksize = int(std::ceil(support)) * 2 + 1;
    c.first.resize(size_t(out_size));
    c.count.resize(size_t(out_size));
    c.weights.assign(size_t(out_size) * size_t(c.ksize), 0);
    std::vector<double> k(size_t(c.ksize));
    for (int xx = 0; xx < out_size; ++xx) {
        const double center = (xx + 0.5) * scale;
        const double ss = 1.0 / filterscale;
        int xmin = int(center - support + 0.5);  // truncation, as the C cast
        if (xmin < 0) xmin = 0;
        int xmax = int(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            const double w = filter.weight((x + xmin - center + 0.5) * ss);
            k[size_t(x)] = w;
            ww += w;
        }
        int32_t* out = &c.weights[size_t(xx) * size_t(c.ksize)];
        for (int x = 0; x < xmax; ++x) {
            const double w = ww != 0.0 ? k[size_t(x)] / ww : k[size_t(x)];
            // normalize_coeffs_8bpc: round half away from zero
            out[x] = w < 0 ? int(-0.5 + w * (1 << precision_bits)) : int(0.5 + w * (1 << precision_bits));
        }
        c.first[size_t(xx)] = xmin;
        c.count[size_t(xx)] = xmax;
    }
    return c;
}

// Passes with less work than this (multiply-adds) run on one thread: waking
// the OpenMP pool would cost more than it saves.
constexpr int64_t parallel_min_work = int64_t(1) << 18;

// Resample.c clip8: the accumulator carries precision_bits fractional bits.
inline uint8_t clip8(int32_t acc) {
    const int32_t v = acc >> precision_bits;
    return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// ImagingResampleHorizontal_8bpc: each output pixel is a weighted sum along
// its row, started at one half (1 << 21) so the shift rounds.
Image resample_horizontal(const Image& in, int out_width, const Coefficients& c) {
    Image out{out_width, in.height, std::vector<uint8_t>(size_t(out_width) * size_t(in.height) * 3)};
    const int64_t work = int64_t(out.rgb.size()) * c.ksize;
#pragma omp parallel for schedule(static) if (work >= parallel_min_work)
    for (int y = 0; y < in.height; ++y) {
        const uint8_t* row = &in.rgb[size_t(y) * size_t(in.width) * 3];
        uint8_t* dst = &out.rgb[size_t(y) * size_t(out_width) * 3];
        for (int xx = 0; xx < out_width; ++xx) {
            const int32_t* k = &c.weights[size_t(xx) * size_t(c.ksize)];
            const uint8_t* src = row + size_t(c.first[size_t(xx)]) * 3;
            const int count = c.count[size_t(xx)];
            int32_t s0 = 1 << (precision_bits - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < count; ++x) {
                s0 += src[3 * x + 0] * k[x];
                s1 += src[3 * x + 1] * k[x];
                s2 += src[3 * x + 2] * k[x];
            }
            dst[3 * xx + 0] = clip8(s0);
            dst[3 * xx + 1] = clip8(s1);
            dst[3 * xx + 2] = clip8(s2);
        }
    }
    return out;
}

// ImagingResampleVertical_8bpc: the same sum down each column. Rows are
// accumulated whole (integer sums, so the order does not change the result)
// to walk memory contiguously.
Image resample_vertical(const Image& in, int out_height, const Coefficients& c) {
    const size_t row_len = size_t(in.width) * 3;
    Image out{in.width, out_height, std::vector<uint8_t>(row_len * size_t(out_height))};
    const int64_t work = int64_t(out.rgb.size()) * c.ksize;
#pragma omp parallel if (work >= parallel_min_work)
    {
        std::vector<int32_t> acc(row_len);
#pragma omp for schedule(static)
        for (int yy = 0; yy < out_height; ++yy) {
            const int32_t* k = &c.weights[size_t(yy) * size_t(c.ksize)];
            // restrict: uint8_t may alias anything, which would stop vectorization
            int32_t* __restrict sum = acc.data();
            std::fill_n(sum, row_len, 1 << (precision_bits - 1));
            for (int y = 0; y < c.count[size_t(yy)]; ++y) {
                const uint8_t* __restrict src = &in.rgb[size_t(c.first[size_t(yy)] + y) * row_len];
                const int32_t w = k[y];
                for (size_t i = 0; i < row_len; ++i) sum[i] += src[i] * w;
            }
            uint8_t* __restrict dst = &out.rgb[size_t(yy) * row_len];
            for (size_t i = 0; i < row_len; ++i) dst[i] = clip8(sum[i]);
        }
    }
    return out;
}

// Pillow's NEAREST resize is not a filter: _imaging.c _resize hands it to
// ImagingTransform with the affine map x_in = x * scale, which lands in
// ImagingScaleAffine. That samples at the output pixel centre, accumulating
// the position step by step (so rounding follows the running sum), and
// truncates; positions outside the input stay black.
std::vector<int> nearest_positions(int in_size, int out_size) {
    const double step = double(in_size) / out_size;
    std::vector<int> pos(size_t(out_size), -1);
    double at = step * 0.5;
    for (int x = 0; x < out_size; ++x) {
        const int p = at < 0.0 ? -1 : int(at);  // Geometry.c COORD
        if (p >= 0 && p < in_size) pos[size_t(x)] = p;
        at += step;
    }
    return pos;
}

Image resize_nearest(const Image& in, int out_width, int out_height) {
    const std::vector<int> xs = nearest_positions(in.width, out_width);
    const std::vector<int> ys = nearest_positions(in.height, out_height);
    Image out{out_width, out_height, std::vector<uint8_t>(size_t(out_width) * size_t(out_height) * 3, 0)};
#pragma omp parallel for schedule(static) if (int64_t(out.rgb.size()) >= parallel_min_work)
    for (int y = 0; y < out_height; ++y) {
        if (ys[size_t(y)] < 0) continue;
        const uint8_t* row = &in.rgb[size_t(ys[size_t(y)]) * size_t(in.width) * 3];
        uint8_t* dst = &out.rgb[size_t(y) * size_t(out_width) * 3];
        for (int x = 0; x < out_width; ++x) {
            if (xs[size_t(x)] < 0) continue;
            std::memcpy(dst + 3 * size_t(x), row + 3 * size_t(xs[size_t(x)]), 3);
        }
    }
    return out;
}

}  // namespace

Resample resample_from_name(const std::string& name, const std::string& where) {
    if (name == "nearest") return Resample::nearest;
    if (name == "bilinear") return Resample::bilinear;
    if (name == "bicubic") return Resample::bicubic;
    fail(where, "unknown interpolation '" + name + "' (expected nearest, bilinear or bicubic)");
}

Image image_resize_pillow(const Image& src, int out_width, int out_height, Resample resample) {
    if (src.width <= 0 || src.height <= 0) fail("image resize", "the input image is empty");
    if (out_width <= 0 || out_height <= 0)
        fail("image resize", "output size " + std::to_string(out_width) + "x" + std::to_string(out_height) +
                                 " must be positive");
    // Image.resize: same size and whole box -> a copy.
    if (out_width == src.width && out_height == src.height) return src;
    if (resample == Resample::nearest) return resize_nearest(src, out_width, out_height);

    // ImagingResampleInner: horizontal pass first, each pass only when its
    // dimension changes; the intermediate image is 8-bit.
    const Filter filter = resample == Resample::bicubic ? Filter{bicubic_weight, 2.0} : Filter{bilinear_weight, 1.0};
    auto vertical = [&](const Image& in) {
        return resample_vertical(in, out_height, precompute_coefficients(src.height, out_height, filter));
    };
    if (out_width == src.width) return vertical(src);
    Image wide = resample_horizontal(src, out_width, precompute_coefficients(src.width, out_width, filter));
    if (out_height == src.height) return wide;
    return vertical(wide);
}

}  // namespace tessera
