// timm's transforms_imagenet_eval (timm/data/transforms_factory.py) on top of
// the Pillow-exact resize: each step names the torchvision/timm transform it
// reproduces.
#include "io/preprocess.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>

#include "tessera/error.h"

namespace tessera {

namespace {

// Model configs write crop_pct and mean as short decimals (0.9, 0.485) that
// Python holds as doubles; timm does its arithmetic on those doubles. The
// shortest decimal that round-trips our float is that literal, so parsing it
// as a double recovers Python's value exactly (floor(221 / 0.85) is 260 with
// the double, 259 with the float 0.85f).
std::string shortest_decimal(float value) {
    char text[32];
    return std::string(text, std::to_chars(text, text + sizeof text, value).ptr);
}

double python_double(float value) {
    const std::string text = shortest_decimal(value);
    double parsed = 0.0;
    std::from_chars(text.data(), text.data() + text.size(), parsed);
    return parsed;
}

// Python's round() on a float: halves go to the even neighbour, as nearbyint
// does in the default (round-to-nearest-even) floating-point mode.
int python_round(double x) { return int(std::nearbyint(x)); }

// timm ResizeKeepRatio.get_params (no random scale/aspect): one ratio for
// both sides, the smaller of the two (longest = 0) or the larger (longest = 1).
void keep_ratio_size(int height, int width, int target_height, int target_width, bool longest, int& out_height,
                     int& out_width) {
    const double ratio_h = double(height) / target_height;
    const double ratio_w = double(width) / target_width;
    const double ratio = longest ? std::max(ratio_h, ratio_w) : std::min(ratio_h, ratio_w);
    out_height = python_round(height / ratio);
    out_width = python_round(width / ratio);
}

// torchvision Resize(int): the shorter side becomes `size`, the longer one
// int(size * long / short) (truncated); no-op when the shorter side already is.
Image resize_shorter_side(const Image& image, int size, Resample resample) {
    const bool portrait = image.width <= image.height;
    const int shorter = portrait ? image.width : image.height;
    const int longer = portrait ? image.height : image.width;
    const int new_longer = int(double(int64_t(size) * longer) / shorter);
    const int new_width = portrait ? size : new_longer;
    const int new_height = portrait ? new_longer : size;
    return image_resize_pillow(image, new_width, new_height, resample);
}

// torchvision CenterCrop / timm CenterCropOrPad: pad with `fill` where the
// crop is larger than the image (the odd pixel goes right/bottom), then cut
// at int(round((size - crop) / 2.0)).
Image center_crop_or_pad(const Image& image, int crop_width, int crop_height, const uint8_t fill[3]) {
    const int pad_left = crop_width > image.width ? (crop_width - image.width) / 2 : 0;
    const int pad_top = crop_height > image.height ? (crop_height - image.height) / 2 : 0;
    const int padded_width = std::max(crop_width, image.width);
    const int padded_height = std::max(crop_height, image.height);
    const int left = python_round((padded_width - crop_width) / 2.0) - pad_left;
    const int top = python_round((padded_height - crop_height) / 2.0) - pad_top;

    // Output pixel (x, y) is image pixel (x + left, y + top), or fill outside.
    Image out{crop_width, crop_height, std::vector<uint8_t>(size_t(crop_width) * size_t(crop_height) * 3)};
    for (int y = 0; y < crop_height; ++y) {
        uint8_t* dst = &out.rgb[size_t(y) * size_t(crop_width) * 3];
        const int sy = y + top;
        for (int x = 0; x < crop_width; ++x) {
            const int sx = x + left;
            const bool inside = sy >= 0 && sy < image.height && sx >= 0 && sx < image.width;
            const uint8_t* src = inside ? &image.rgb[(size_t(sy) * size_t(image.width) + size_t(sx)) * 3] : fill;
            dst[3 * x + 0] = src[0];
            dst[3 * x + 1] = src[1];
            dst[3 * x + 2] = src[2];
        }
    }
    return out;
}

}  // namespace

int preprocess_scale_size(int input_size, float crop_pct) {
    if (!(crop_pct > 0.0f) || !std::isfinite(crop_pct))
        fail("preprocess", "crop_pct " + shortest_decimal(crop_pct) + " must be a positive number");
    // timm: scale_size = math.floor(img_size / crop_pct)
    const double scale = std::floor(input_size / python_double(crop_pct));
    if (scale < 1 || scale > INT32_MAX)
        fail("preprocess", "crop_pct " + shortest_decimal(crop_pct) + " turns input size " + std::to_string(input_size) +
                               " into an unusable resize size");
    return int(scale);
}

Image preprocess_geometry(const Image& image, const PreprocessConfig& cfg) {
    const std::string where = "preprocess";
    if (image.width <= 0 || image.height <= 0) fail(where, "the input image is empty");
    if (cfg.input_width <= 0 || cfg.input_height <= 0)
        fail(where, "input size " + std::to_string(cfg.input_height) + "x" + std::to_string(cfg.input_width) +
                        " must be positive");
    if (cfg.crop_mode != "center" && cfg.crop_mode != "squash" && cfg.crop_mode != "border")
        fail(where, "unknown crop_mode '" + cfg.crop_mode + "' (expected center, squash or border)");
    const int scale_h = preprocess_scale_size(cfg.input_height, cfg.crop_pct);
    const int scale_w = preprocess_scale_size(cfg.input_width, cfg.crop_pct);
    const uint8_t black[3] = {0, 0, 0};

    if (cfg.crop_mode == "squash") {
        // Resize(scale_size) with a (h, w) pair: exactly that size, aspect not kept.
        const Image resized = image_resize_pillow(image, scale_w, scale_h, cfg.interpolation);
        return center_crop_or_pad(resized, cfg.input_width, cfg.input_height, black);
    }
    if (cfg.crop_mode == "border") {
        // ResizeKeepRatio(longest=1.0) then CenterCropOrPad(fill=round(255 * mean)).
        int h = 0, w = 0;
        keep_ratio_size(image.height, image.width, scale_h, scale_w, true, h, w);
        const Image resized = image_resize_pillow(image, w, h, cfg.interpolation);
        uint8_t fill[3];
        for (int c = 0; c < 3; ++c) fill[c] = uint8_t(std::clamp(python_round(255 * python_double(cfg.mean[c])), 0, 255));
        return center_crop_or_pad(resized, cfg.input_width, cfg.input_height, fill);
    }
    if (scale_h == scale_w) {
        const Image resized = resize_shorter_side(image, scale_h, cfg.interpolation);
        return center_crop_or_pad(resized, cfg.input_width, cfg.input_height, black);
    }
    // Non-square target: timm builds ResizeKeepRatio(scale_size) without
    // passing the interpolation, so it resizes with its default, bilinear.
    int h = 0, w = 0;
    keep_ratio_size(image.height, image.width, scale_h, scale_w, false, h, w);
    const Image resized = image_resize_pillow(image, w, h, Resample::bilinear);
    return center_crop_or_pad(resized, cfg.input_width, cfg.input_height, black);
}

void preprocess_image(const Image& image, const PreprocessConfig& cfg, float* out) {
    for (int c = 0; c < 3; ++c)
        if (!(std::abs(cfg.std[c]) > 0.0f)) fail("preprocess", "std[" + std::to_string(c) + "] must be non-zero");
    const Image cropped = preprocess_geometry(image, cfg);
    const size_t plane = size_t(cropped.width) * size_t(cropped.height);
    // ToTensor (x / 255 in float32) then Normalize ((x - mean) / std, float32).
    for (int c = 0; c < 3; ++c) {
        const float mean = cfg.mean[c], stdev = cfg.std[c];
        float* dst = out + size_t(c) * plane;
        for (size_t i = 0; i < plane; ++i) dst[i] = (float(cropped.rgb[3 * i + size_t(c)]) / 255.0f - mean) / stdev;
    }
}

}  // namespace tessera
