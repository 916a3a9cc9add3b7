// Eval-time preprocessing exactly as timm's transforms_imagenet_eval builds
// it from a model's pretrained_cfg: resize (shorter side to floor(size /
// crop_pct), torchvision semantics), center crop (torchvision rounding),
// scale to [0, 1], normalize by mean/std. Output is planar CHW float.
#pragma once
#include <string>

#include "io/image.h"

namespace tessera {

struct PreprocessConfig {
    int input_height = 224;
    int input_width = 224;
    double crop_pct = 0.875;  // double: floor(size / crop_pct) must equal Python's (224 / 0.8 = 280)
    std::string crop_mode = "center";  // "center" | "squash" | "border"
    Resample interpolation = Resample::bicubic;
    float mean[3] = {0.485f, 0.456f, 0.406f};
    float std[3] = {0.229f, 0.224f, 0.225f};
};

// timm's scale_size for one side: floor(input_size / crop_pct), computed on
// the double Python holds for crop_pct's decimal literal (224 / 0.875 = 256,
// 224 / 0.9 -> 248). Throws tessera::Error for a non-positive crop_pct.
int preprocess_scale_size(int input_size, float crop_pct);

// Resize + crop only (8-bit result, input_width x input_height).
Image preprocess_geometry(const Image& image, const PreprocessConfig& cfg);

// Full pipeline; out holds 3 * input_height * input_width floats (CHW).
void preprocess_image(const Image& image, const PreprocessConfig& cfg, float* out);

}  // namespace tessera
