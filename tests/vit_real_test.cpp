// The real ImageNet ViT-Tiny and DeiT-Tiny: logit parity and per-image top-1
// agreement with the independent float64 reference (tools/reference_vit.py),
// accuracy on the shared validation images, and MACs equal to the analytic
// count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/image.h"
#include "kernels/onednn_linear.h"
#include "io/labels.h"
#include "io/preprocess.h"
#include "models/vit.h"
#include "tessera/classifier.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {

const char* kVitTiny = "vit_tiny_patch16_224.augreg_in21k_ft_in1k";
const char* kDeitTiny = "deit_tiny_patch16_224.fb_in1k";

std::string model_dir(const char* name) { return test::shared_dir() + "/models/" + name; }
std::string val_dir() { return test::shared_dir() + "/data/imagenet-val1300"; }

// float64 C-order .npy (what numpy.save writes for a 2-D float64 array).
std::vector<double> read_npy_f64(const std::string& path, size_t& rows, size_t& cols) {
    std::string bytes = test::read_file(path);
    if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) fail(path, "not an .npy file");
    const size_t header_len = uint8_t(bytes[8]) | size_t(uint8_t(bytes[9])) << 8;
    const std::string header = bytes.substr(10, header_len);
    if (header.find("'<f8'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
        fail(path, "expected little-endian float64 in C order: " + header);
    size_t open = header.find("'shape': (");
    if (std::sscanf(header.c_str() + open, "'shape': (%zu, %zu)", &rows, &cols) != 2) fail(path, "bad shape: " + header);
    std::vector<double> v(rows * cols);
    std::memcpy(v.data(), bytes.data() + 10 + header_len, v.size() * sizeof(double));
    return v;
}

struct Labelled {
    std::vector<std::string> paths;
    std::vector<int> labels;
};

Labelled first_images(size_t n) {
    Labelled out;
    for (const LabeledImage& item : dataset_labels_read(val_dir() + "/labels.tsv", 1000)) {
        if (out.paths.size() == n) break;
        out.paths.push_back(val_dir() + "/images/" + item.image);
        out.labels.push_back(item.label);
    }
    return out;
}

class RealVit : public ::testing::TestWithParam<const char*> {};

// Runs the float64 reference on the first n validation images and the engine
// on the same files; compares logits and top-1.
TEST_P(RealVit, MatchesTheFloat64ReferenceImageByImage) {
    TESSERA_REQUIRE_SHARED();
    TESSERA_REQUIRE_PYTHON();
    const size_t n = 64;
    const std::string dir = test::temp_dir();
    auto ref = test::run_command(test::reference_python() + " " + test::source_path("tools/reference_vit.py") +
                                 " --model " + model_dir(GetParam()) + " --dataset " + val_dir() + " --limit " +
                                 std::to_string(n) + " --out " + dir + "/ref.jsonl --dump-logits " + dir + "/ref.npy");
    ASSERT_EQ(ref.exit_code, 0) << ref.err;
    size_t rows = 0, cols = 0;
    std::vector<double> ref_logits = read_npy_f64(dir + "/ref.npy", rows, cols);
    ASSERT_EQ(rows, n);
    ASSERT_EQ(cols, 1000u);

    VitModel model;
    vit_load(model, model_dir(GetParam()));
    VitState state;
    vit_state_init(state, model, 1);
    Labelled images = first_images(n);
    std::vector<float> pixels(3 * 224 * 224), logits(1000);
    double worst = 0.0;
    int agree = 0;
    for (size_t i = 0; i < n; ++i) {
        preprocess_image(image_decode_file(images.paths[i]), model.preprocess, pixels.data());
        vit_forward(model, state, pixels.data(), 1, nullptr, 0, nullptr, logits.data());
        size_t best = 0, ref_best = 0;
        for (size_t k = 0; k < 1000; ++k) {
            worst = std::max(worst, std::abs(double(logits[k]) - ref_logits[i * 1000 + k]));
            if (logits[k] > logits[best]) best = k;
            if (ref_logits[i * 1000 + k] > ref_logits[i * 1000 + ref_best]) ref_best = k;
        }
        agree += best == ref_best;
    }
    // Same decoded pixels, same resize: only float32 rounding separates the two.
    EXPECT_LT(worst, 2e-4) << "max |logit difference| over " << n << " images";  // measured 2.1e-5
    EXPECT_EQ(agree, int(n));
    RecordProperty("max_logit_diff", std::to_string(worst));
    std::printf("max |logit - float64 reference| over %zu images: %.3g, top-1 agreement %d/%zu\n", n, worst, agree, n);
}

struct Expected {
    const char* model;
    double top1;  // float64 reference over the 1300 images (models' SOURCE.md)
};

class RealVitAccuracy : public ::testing::TestWithParam<Expected> {};

// Also runs the same images with bf16 weight matrices (--dtype bf16): its
// top-1 must agree with f32 on at least 99% of the images (issue 7) and its
// accuracy stay within half a point of the reference. Both forms of a bf16
// run are checked where this CPU has both: the one chosen here, and oneDNN's
// bf16 products where the CPU has them but they do not pay
// (onednn_bf16_products_pay; the chosen form then runs f32 products over
// bf16-rounded weights).
TEST_P(RealVitAccuracy, Top1OnVal1300IsWithinAThirdOfAPointOfTheReferenceAndBf16Agrees) {
    TESSERA_REQUIRE_SHARED();
    Classifier clf({model_dir(GetParam().model), "", 0, 8});
    struct Bf16Form {
        std::string name;
        Classifier clf;
        int top1 = 0, agree = 0;
    };
    std::vector<Bf16Form> forms;
    forms.push_back({"bf16", Classifier({model_dir(GetParam().model), "", 0, 8, "bf16"})});
    if (onednn_linear_chosen(DType::bf16) && !onednn_bf16_products_pay()) {
        test::ScopedEnv products("TESSERA_LINEAR", "onednn");
        forms.push_back({"bf16 products", Classifier({model_dir(GetParam().model), "", 0, 8, "bf16"})});
        EXPECT_STREQ(forms.back().clf.linear_path(), "onednn");
    }
    for (const Bf16Form& f : forms) ASSERT_STREQ(f.clf.dtype(), "bf16") << f.name;
    std::vector<LabeledImage> items = dataset_labels_read(val_dir() + "/labels.tsv", 1000);
    ASSERT_EQ(items.size(), 1300u);
    std::vector<float> pixels(size_t(clf.input_floats()) * 8);
    int top1 = 0;
    for (size_t i = 0; i < items.size(); i += 8) {
        const int b = int(std::min<size_t>(8, items.size() - i));
        for (int j = 0; j < b; ++j)
            clf.load_image(val_dir() + "/images/" + items[i + size_t(j)].image, pixels.data() + j * clf.input_floats());
        std::vector<Classification> r = clf.classify(pixels.data(), b, 1);
        for (int j = 0; j < b; ++j) top1 += r[size_t(j)].top[0].class_index == items[i + size_t(j)].label;
        for (Bf16Form& f : forms) {
            std::vector<Classification> r16 = f.clf.classify(pixels.data(), b, 1);
            for (int j = 0; j < b; ++j) {
                const int bf16 = r16[size_t(j)].top[0].class_index;
                f.top1 += bf16 == items[i + size_t(j)].label;
                f.agree += r[size_t(j)].top[0].class_index == bf16;
            }
        }
    }
    const double n = double(items.size()), acc = 100.0 * top1 / n;
    EXPECT_NEAR(acc, GetParam().top1, 0.3) << GetParam().model;
    RecordProperty("top1", std::to_string(acc));
    std::printf("%s: top-1 f32 %.2f%%\n", GetParam().model, acc);
    for (const Bf16Form& f : forms) {
        const double acc16 = 100.0 * f.top1 / n, agreement = 100.0 * f.agree / n;
        EXPECT_GE(agreement, 99.0) << GetParam().model << ": " << f.name << " top-1 agrees with f32 on " << f.agree
                                   << " of 1300";
        EXPECT_NEAR(acc16, GetParam().top1, 0.5) << GetParam().model << " in " << f.name;
        if (&f == &forms.front()) {
            RecordProperty("top1_bf16", std::to_string(acc16));
            RecordProperty("bf16_agreement", std::to_string(agreement));
        }
        std::printf("%s: %s (%s) top-1 %.2f%%, agrees with f32 on %d/1300 (%.2f%%)\n", GetParam().model,
                    f.name.c_str(), f.clf.linear_path(), acc16, f.agree, agreement);
    }
}

INSTANTIATE_TEST_SUITE_P(Models, RealVit, ::testing::Values(kVitTiny, kDeitTiny),
                         [](const auto& info) { return std::string(info.param).substr(0, 4); });
INSTANTIATE_TEST_SUITE_P(Models, RealVitAccuracy,
                         ::testing::Values(Expected{kVitTiny, 82.62}, Expected{kDeitTiny, 81.62}),
                         [](const auto& info) { return std::string(info.param.model).substr(0, 4); });

TEST(RealVitMacs, EqualTheAnalyticCount) {
    TESSERA_REQUIRE_SHARED();
    Classifier clf({model_dir(kVitTiny), "", 1, 1});
    std::vector<float> pixels(size_t(clf.input_floats()), 0.0f);
    Classification c = clf.classify(pixels.data(), 1, 1)[0];
    // Papers' count: patch conv, per block qkv + scores + values + proj + 2 MLP
    // products, head. N = 197, C = 192, MLP 768, 196 patches of 768 values.
    const double n = 197, cc = 192, hidden = 768;
    const double analytic = 196 * 768 * cc + 12 * (n * cc * 3 * cc + 2 * n * n * cc + n * cc * cc + 2 * n * cc * hidden) + cc * 1000;
    EXPECT_NEAR(analytic * 1e-9, 1.2537, 5e-5);
    EXPECT_NEAR(double(c.macs), analytic, analytic * 0.005);
    EXPECT_EQ(double(c.macs), analytic);  // the ledger counts exactly these products
    const Ledger& l = clf.last_ledger();
    EXPECT_EQ(l.by_component(Component::patch_embed), uint64_t(196 * 768 * 192));
    EXPECT_EQ(l.by_component(Component::head), uint64_t(192 * 1000));
    EXPECT_EQ(l.by_stage().at("model"), l.total());
    EXPECT_EQ(c.tokens, std::vector<int>(12, 197));
}

}  // namespace
}  // namespace tessera
