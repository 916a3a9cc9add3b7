// timm eval preprocessing: the size arithmetic and crop rounding on synthetic
// images, then parity with tools/pillow_reference.py on real ImageNet images.
#include "io/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "tessera/error.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace tessera {
namespace {

// Pixel (x, y) holds (x, y, x ^ y) (mod 256): a crop's offset can be read off
// its first pixel.
Image coordinate_image(int width, int height) {
    Image image{width, height, std::vector<uint8_t>(size_t(width) * size_t(height) * 3)};
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x) {
            uint8_t* px = &image.rgb[(size_t(y) * size_t(width) + size_t(x)) * 3];
            px[0] = uint8_t(x);
            px[1] = uint8_t(y);
            px[2] = uint8_t(x ^ y);
        }
    return image;
}

const uint8_t* pixel(const Image& image, int x, int y) {
    return &image.rgb[(size_t(y) * size_t(image.width) + size_t(x)) * 3];
}

Image sub_image(const Image& image, int left, int top, int width, int height) {
    Image out{width, height, std::vector<uint8_t>(size_t(width) * size_t(height) * 3)};
    for (int y = 0; y < height; ++y)
        std::copy_n(pixel(image, left, top + y), size_t(width) * 3, &out.rgb[size_t(y) * size_t(width) * 3]);
    return out;
}

PreprocessConfig config(int size, float crop_pct, const std::string& crop_mode, Resample interpolation) {
    PreprocessConfig cfg;
    cfg.input_height = cfg.input_width = size;
    cfg.crop_pct = crop_pct;
    cfg.crop_mode = crop_mode;
    cfg.interpolation = interpolation;
    return cfg;
}

TEST(Preprocess, ScaleSizeIsFloorOfSizeOverCropPct) {
    EXPECT_EQ(preprocess_scale_size(224, 0.875f), 256);
    EXPECT_EQ(preprocess_scale_size(224, 0.9f), 248);
    EXPECT_EQ(preprocess_scale_size(224, 0.95f), 235);
    EXPECT_EQ(preprocess_scale_size(384, 1.0f), 384);
    // Python: math.floor(221 / 0.85) == 260. The float 0.85f is a little above
    // 0.85, and 221 / 0.85f in any precision is 259.99...
    EXPECT_EQ(preprocess_scale_size(221, 0.85f), 260);
    EXPECT_EQ(int(std::floor(221 / double(0.85f))), 259);
    for (float bad : {0.0f, -0.5f, NAN, INFINITY}) EXPECT_THROW(preprocess_scale_size(224, bad), Error) << bad;
}

TEST(Preprocess, CenterCropRoundsHalfToEven) {
    // torchvision CenterCrop: top = int(round((h - 224) / 2.0)) with Python's
    // round: 249 -> 12.5 -> 12, 251 -> 13.5 -> 14, 250 -> 13.
    struct Case {
        int side;
        float crop_pct;
        int offset;
    };
    for (const Case& c : {Case{249, 0.899f, 12}, Case{250, 0.894f, 13}, Case{251, 0.89f, 14}}) {
        ASSERT_EQ(preprocess_scale_size(224, c.crop_pct), c.side) << "the resize must be a no-op here";
        const Image out = preprocess_geometry(coordinate_image(c.side, c.side), config(224, c.crop_pct, "center", Resample::bicubic));
        ASSERT_EQ(out.width, 224);
        ASSERT_EQ(out.height, 224);
        EXPECT_EQ(pixel(out, 0, 0)[0], c.offset) << c.side;
        EXPECT_EQ(pixel(out, 0, 0)[1], c.offset) << c.side;
    }
}

TEST(Preprocess, CenterModeResizesTheShorterSide) {
    // torchvision Resize(256): shorter side 256, longer int(256 * long / short).
    struct Case {
        int width, height;
        int resized_width, resized_height;
    };
    for (const Case& c : {Case{300, 200, 384, 256}, Case{200, 333, 256, 426}, Case{227, 227, 256, 256}}) {
        const Image image = coordinate_image(c.width, c.height);
        const Image out = preprocess_geometry(image, config(224, 0.875f, "center", Resample::bicubic));
        const Image resized = image_resize_pillow(image, c.resized_width, c.resized_height, Resample::bicubic);
        const int left = (c.resized_width - 224) / 2, top = (c.resized_height - 224) / 2;  // even margins here
        EXPECT_EQ(out.rgb, sub_image(resized, left, top, 224, 224).rgb) << c.width << "x" << c.height;
    }
}

TEST(Preprocess, CropLargerThanResizePadsWithZeros) {
    // crop_pct 1.25: squash to 179x179, then CenterCrop(224) pads 22 left/top,
    // 23 right/bottom with black.
    const Image image = coordinate_image(100, 60);
    const Image out = preprocess_geometry(image, config(224, 1.25f, "squash", Resample::bilinear));
    const Image resized = image_resize_pillow(image, 179, 179, Resample::bilinear);
    for (int y = 0; y < 224; ++y)
        for (int x = 0; x < 224; ++x) {
            const bool inside = x >= 22 && x < 22 + 179 && y >= 22 && y < 22 + 179;
            const uint8_t* expected = inside ? pixel(resized, x - 22, y - 22) : nullptr;
            for (int c = 0; c < 3; ++c) ASSERT_EQ(pixel(out, x, y)[c], expected ? expected[c] : 0) << x << "," << y;
        }
}

TEST(Preprocess, BorderModePadsWithTheMeanColour) {
    // Longest side 300 -> 224 (ratio 300/224), so 100 -> round(74.67) = 75
    // rows, padded 74 above and 75 below with round(255 * mean).
    const Image image = coordinate_image(300, 100);
    PreprocessConfig cfg = config(224, 1.0f, "border", Resample::bicubic);
    const Image resized = image_resize_pillow(image, 224, 75, Resample::bicubic);
    const Image out = preprocess_geometry(image, cfg);  // ImageNet mean -> (124, 116, 104)
    EXPECT_EQ(std::vector<int>(pixel(out, 5, 0), pixel(out, 5, 0) + 3), (std::vector<int>{124, 116, 104}));
    EXPECT_EQ(std::vector<int>(pixel(out, 5, 223), pixel(out, 5, 223) + 3), (std::vector<int>{124, 116, 104}));
    EXPECT_EQ(sub_image(out, 0, 74, 224, 75).rgb, resized.rgb);
    for (float& m : cfg.mean) m = 0.5f;  // 127.5 rounds to even: 128
    EXPECT_EQ(pixel(preprocess_geometry(image, cfg), 0, 0)[0], 128);
}

TEST(Preprocess, NormalizesLikeToTensorAndNormalize) {
    Image image{300, 280, std::vector<uint8_t>(300 * 280 * 3, 200)};
    PreprocessConfig cfg = config(224, 0.9f, "center", Resample::bicubic);
    for (int c = 0; c < 3; ++c) cfg.mean[c] = cfg.std[c] = 0.5f;
    std::vector<float> out(3 * 224 * 224);
    preprocess_image(image, cfg, out.data());
    // A constant image stays constant through Pillow's resize (weights sum to one).
    for (float v : out) ASSERT_EQ(v, (200.0f / 255.0f - 0.5f) / 0.5f);
    EXPECT_NEAR(out[0], 0.568627, 1e-6);

    cfg = PreprocessConfig{};  // ImageNet mean/std
    preprocess_image(image, cfg, out.data());
    for (int c = 0; c < 3; ++c) EXPECT_EQ(out[size_t(c) * 224 * 224 + 1000], (200.0f / 255.0f - cfg.mean[c]) / cfg.std[c]);
    EXPECT_NEAR(out[0], (200 / 255.0 - 0.485) / 0.229, 1e-5);
}

TEST(Preprocess, NonSquareInput) {
    PreprocessConfig cfg = config(224, 0.875f, "center", Resample::bicubic);
    cfg.input_width = 160;
    std::vector<float> out(3 * 224 * 160);
    preprocess_image(coordinate_image(227, 227), cfg, out.data());
    const Image geometry = preprocess_geometry(coordinate_image(227, 227), cfg);
    EXPECT_EQ(geometry.width, 160);
    EXPECT_EQ(geometry.height, 224);
}

TEST(Preprocess, BadConfigsAreErrors) {
    const Image image = coordinate_image(10, 10);
    try {
        preprocess_geometry(image, config(224, 0.9f, "letterbox", Resample::bicubic));
        ADD_FAILURE() << "unknown crop_mode accepted";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "preprocess: unknown crop_mode 'letterbox' (expected center, squash or border)");
    }
    try {
        preprocess_geometry(image, config(224, 0.0f, "center", Resample::bicubic));
        ADD_FAILURE() << "crop_pct 0 accepted";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "preprocess: crop_pct 0 must be a positive number");
    }
    EXPECT_THROW(preprocess_geometry(image, config(0, 0.9f, "center", Resample::bicubic)), Error);
    PreprocessConfig zero_std = config(224, 0.9f, "center", Resample::bicubic);
    zero_std.std[1] = 0.0f;
    std::vector<float> out(3 * 224 * 224);
    EXPECT_THROW(preprocess_image(image, zero_std, out.data()), Error);
    EXPECT_THROW(preprocess_geometry(Image{}, config(224, 0.9f, "center", Resample::bicubic)), Error);
}

// ------------------------------------------------------------------ parity with Pillow + numpy

struct ParityCase {
    const char* size;  // "224" or "HxW"
    const char* crop_pct;
    const char* crop_mode;
    const char* interpolation;
    const char* mean;
    const char* std;
};

std::vector<float> three_floats(const std::string& text) {
    std::vector<float> values;
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, ',');) values.push_back(std::stof(item));
    return values;
}

PreprocessConfig config_of(const ParityCase& pc) {
    PreprocessConfig cfg;
    const std::string size = pc.size;
    const size_t x = size.find('x');
    cfg.input_height = std::stoi(size.substr(0, x));
    cfg.input_width = x == std::string::npos ? cfg.input_height : std::stoi(size.substr(x + 1));
    cfg.crop_pct = std::stof(pc.crop_pct);
    cfg.crop_mode = pc.crop_mode;
    cfg.interpolation = resample_from_name(pc.interpolation, "test");
    const std::vector<float> mean = three_floats(pc.mean), std = three_floats(pc.std);
    for (int c = 0; c < 3; ++c) {
        cfg.mean[c] = mean[size_t(c)];
        cfg.std[c] = std[size_t(c)];
    }
    return cfg;
}

// Runs every (image, case) job through our preprocessing and, in one Python
// run, through the reference; returns the largest |ours - reference| per job.
struct ParityJob {
    Image image;
    ParityCase pc;
};

std::vector<double> parity_max_diffs(const std::vector<ParityJob>& jobs) {
    const std::string dir = test::temp_dir();
    std::string command =
        test::reference_python() + " '" + test::source_path("tools/pillow_reference.py") + "' preprocess";
    for (size_t j = 0; j < jobs.size(); ++j) {
        const std::string png = dir + "/" + std::to_string(j) + ".png";
        image_write_png(png, jobs[j].image);
        const ParityCase& pc = jobs[j].pc;
        command += " '" + png + "' " + pc.size + " " + pc.crop_pct + " " + pc.crop_mode + " " + pc.interpolation + " " +
                   pc.mean + " " + pc.std + " '" + dir + "/" + std::to_string(j) + ".f32'";
    }
    const test::CommandResult run = test::run_command(command);
    EXPECT_EQ(run.exit_code, 0) << run.err;

    std::vector<double> diffs;
    for (size_t j = 0; j < jobs.size(); ++j) {
        const PreprocessConfig cfg = config_of(jobs[j].pc);
        std::vector<float> ours(size_t(3) * size_t(cfg.input_height) * size_t(cfg.input_width));
        preprocess_image(jobs[j].image, cfg, ours.data());
        const std::string bytes = test::read_file(dir + "/" + std::to_string(j) + ".f32");
        if (bytes.size() != ours.size() * sizeof(float)) {
            ADD_FAILURE() << "job " << j << ": reference output has " << bytes.size() << " bytes";
            diffs.push_back(INFINITY);
            continue;
        }
        std::vector<float> reference(ours.size());
        std::memcpy(reference.data(), bytes.data(), bytes.size());
        double max_diff = 0;
        for (size_t i = 0; i < ours.size(); ++i) max_diff = std::max(max_diff, double(std::abs(ours[i] - reference[i])));
        diffs.push_back(max_diff);
    }
    return diffs;
}

std::vector<std::string> first_real_images(size_t count) {
    const fs::path dir = fs::path(test::shared_dir()) / "data/imagenet-val1300/images";
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir))
        if (entry.path().extension() == ".JPEG") names.push_back(entry.path().string());
    std::sort(names.begin(), names.end());
    names.resize(std::min(names.size(), count));
    return names;
}

constexpr const char* imagenet_mean = "0.485,0.456,0.406";
constexpr const char* imagenet_std = "0.229,0.224,0.225";
constexpr const char* half = "0.5,0.5,0.5";

TEST(Preprocess, MatchesTimmEvalTransformOnRealImages) {
    TESSERA_REQUIRE_SHARED();
    TESSERA_REQUIRE_PYTHON();
    // The two shipped models: ViT-Tiny augreg (0.9, mean/std 0.5) and DeiT-Tiny (0.875, ImageNet).
    const ParityCase cases[] = {{"224", "0.9", "center", "bicubic", half, half},
                                {"224", "0.875", "center", "bicubic", imagenet_mean, imagenet_std}};
    std::vector<ParityJob> jobs;
    std::vector<std::string> labels;
    for (const std::string& path : first_real_images(4)) {
        const Image image = image_decode_file(path);
        for (const ParityCase& pc : cases) {
            jobs.push_back({image, pc});
            labels.push_back(fs::path(path).filename().string() + " crop_pct " + pc.crop_pct);
        }
    }
    const std::vector<double> diffs = parity_max_diffs(jobs);
    for (size_t j = 0; j < diffs.size(); ++j) {
        std::cout << "  " << labels[j] << ": max |diff| " << diffs[j] << "\n";
        EXPECT_LT(diffs[j], 1e-5) << labels[j];
    }
}

TEST(Preprocess, MatchesTimmEvalTransformOnEveryPath) {
    TESSERA_REQUIRE_SHARED();
    TESSERA_REQUIRE_PYTHON();
    // Non-square cut-outs of real images through every resize/crop branch.
    const ParityCase cases[] = {
        {"224", "0.875", "center", "bicubic", imagenet_mean, imagenet_std},
        {"224", "1.15", "center", "bicubic", imagenet_mean, imagenet_std},     // crop > resize: zero padding
        {"224x192", "0.875", "center", "bicubic", imagenet_mean, imagenet_std},  // ResizeKeepRatio, bilinear
        {"224", "0.9", "squash", "bicubic", half, half},
        {"192x256", "0.95", "squash", "nearest", imagenet_mean, imagenet_std},
        {"224", "0.9", "border", "bicubic", half, half},
        {"224", "1.0", "border", "bilinear", imagenet_mean, imagenet_std},
    };
    std::vector<ParityJob> jobs;
    std::vector<std::string> labels;
    for (const std::string& path : first_real_images(2)) {
        const Image image = image_decode_file(path);
        for (const Image& part : {sub_image(image, 0, 40, 227, 150), sub_image(image, 50, 0, 121, 227)})
            for (const ParityCase& pc : cases) {
                jobs.push_back({part, pc});
                labels.push_back(std::to_string(part.width) + "x" + std::to_string(part.height) + " " + pc.size + " " +
                                 pc.crop_pct + " " + pc.crop_mode + " " + pc.interpolation);
            }
    }
    const std::vector<double> diffs = parity_max_diffs(jobs);
    for (size_t j = 0; j < diffs.size(); ++j) {
        std::cout << "  " << labels[j] << ": max |diff| " << diffs[j] << "\n";
        EXPECT_LT(diffs[j], 1e-5) << labels[j];
    }
}

}  // namespace
}  // namespace tessera
