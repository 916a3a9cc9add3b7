// Image decoding (stb_image: JPEG, PNG, BMP) and Pillow-compatible resampling.
// Decoding checks the dimensions from the header before allocating pixels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

// 8-bit RGB, row-major, interleaved (HWC).
struct Image {
    int width = 0;
    int height = 0;
    std::vector<uint8_t> rgb;  // width * height * 3
};

struct ImageLimits {
    int64_t max_pixels = int64_t(1) << 28;  // 268M pixels (e.g. 16384 x 16384)
    int64_t max_file_bytes = int64_t(1) << 30;
};

// Throws tessera::Error "PATH: ..." for unreadable, corrupt, empty, non-image
// or oversized inputs. Grey and RGBA inputs are converted to RGB (alpha dropped,
// as Pillow's convert("RGB") does).
Image image_decode_file(const std::string& path, const ImageLimits& limits = {});
Image image_decode_memory(const uint8_t* bytes, size_t size, const std::string& name,
                          const ImageLimits& limits = {});

// Writes a PNG (used by tests and visualizations).
void image_write_png(const std::string& path, const Image& image);

enum class Resample { nearest, bilinear, bicubic };
Resample resample_from_name(const std::string& name, const std::string& where);  // "bicubic", ...

// Pillow's Image.resize(size, resample) with reducing_gap=None, bit-exact:
// separable antialiased convolution, horizontal pass first, 8-bit fixed point
// (22 fractional bits) with rounding and clamping after each pass.
Image image_resize_pillow(const Image& src, int out_width, int out_height, Resample resample);

}  // namespace tessera
