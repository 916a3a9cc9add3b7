// Helpers shared by the tests: where the real weights and images live, and
// temporary files.
#pragma once
#include "tessera/stage.h"
#include "tessera/tensor.h"
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

namespace tessera::test {

// Folder with the real models and data: $TESSERA_SHARED, else ../shared next
// to the source tree. Empty when neither exists.
std::string shared_dir();

// Absolute path inside the repository.
std::string source_path(const std::string& relative);

// A fresh, empty temporary folder for this test (removed at exit).
std::string temp_dir();

// Writes bytes to a file, returns the path.
std::string write_file(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

// Runs a shell command, returns its exit code; stdout and stderr captured.
struct CommandResult {
    int exit_code = -1;
    std::string out;
    std::string err;
};
CommandResult run_command(const std::string& command);

// The Debian python3 with numpy and Pillow, or "" when not available.
std::string reference_python();

// Sets (value) or removes (null) an environment variable for a scope, then
// puts back what was there (e.g. TESSERA_LINEAR to force a kernel path).
class ScopedEnv {
public:
    ScopedEnv(const char* name, const char* value);
    ~ScopedEnv();
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

private:
    std::string name_, previous_;
    bool had_previous_ = false;
};

// Renders held-out ShapeScenes scenes 0..count-1 with tools/shapescenes.py
// into a fresh temporary folder (images/heldout-NNNNNN.png, scenes.jsonl).
std::string render_heldout(int count);

}  // namespace tessera::test

// Skips the current test, with the reason, when ../shared is not present.
#define TESSERA_REQUIRE_SHARED()                                                                     \
    do {                                                                                             \
        if (::tessera::test::shared_dir().empty())                                                   \
            GTEST_SKIP() << "real weights/images not found: set TESSERA_SHARED or provide ../shared"; \
    } while (0)

#define TESSERA_REQUIRE_PYTHON()                                                                  \
    do {                                                                                          \
        if (::tessera::test::reference_python().empty())                                          \
            GTEST_SKIP() << "python3 with numpy and Pillow not found (run scripts/setup.sh)";     \
    } while (0)

namespace tessera::test {

// A named tensor for write_safetensors (f32).
struct NamedTensor {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> values;
};
std::string safetensors_bytes(const std::vector<NamedTensor>& tensors);

// Writes DIR/config.json and DIR/model.safetensors for a small random timm
// ViT (depth, width, heads, image size, patch, classes), deterministic in seed.
struct TinyVit {
    int img = 32, patch = 8, dim = 32, depth = 3, heads = 2, classes = 10;
    uint32_t seed = 1;
    bool layer_scale = false;  // blocks.i.ls1.gamma and ls2.gamma
    std::string act = "gelu";  // model_args.act_layer: gelu or quick_gelu
};
std::vector<NamedTensor> tiny_vit_tensors(const TinyVit& v);
std::string tiny_vit_config(const TinyVit& v);
void write_tiny_vit(const std::string& dir, const TinyVit& v);

// The message of the tessera::Error that f throws, or "(no error)".
std::string error_of(const std::function<void()>& f);

// Softmax attention in double where query i sees key j iff allowed(i, j).
// cls_probs receives query 0's row (0 where not allowed).
void masked_attention(const std::vector<float>& qkv, int n, int heads, int d, double scale, const float* key_bias,
                      const std::function<bool(int, int)>& allowed, std::vector<double>& out,
                      std::vector<double>& cls_probs);

// Largest |a[i] - b[i]| (sizes must agree); infinity where either side holds a NaN.
float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);

// A stage that records every block's CLS attention row ([heads, count] per block).
class ClsRowRecorder : public Stage {
public:
    const std::string& name() const override { return name_; }
    Signals signals(int) const override { return {true, true}; }
    void encoder_after_attention(BlockView& view) override {
        rows.emplace_back(view.cls_attention, view.cls_attention + int64_t(view.heads) * view.state->count);
        heads = view.heads;
    }
    // Head-mean attention of block l's CLS row to the non-CLS tokens.
    std::vector<double> head_mean(size_t block) const {
        const std::vector<float>& r = rows[block];
        const size_t n = r.size() / size_t(heads);
        std::vector<double> out(n - 1, 0.0);
        for (int h = 0; h < heads; ++h)
            for (size_t t = 1; t < n; ++t) out[t - 1] += r[size_t(h) * n + t] / heads;
        return out;
    }
    std::vector<std::vector<float>> rows;
    int heads = 0;

private:
    std::string name_ = "cls_row_recorder";
};

// Deterministic uniform values in [-scale, scale].
std::vector<float> random_values(size_t n, uint32_t seed, float scale = 1.0f);

// The values rounded to f16 or bf16 (dtype), as bits.
std::vector<uint16_t> sixteen_bit(const std::vector<float>& values, DType dtype);

// Hostile image headers (tests/image_test.cpp, tests/errors_doc_test.cpp).
void append_be32(std::string& s, uint32_t v);
void append_le(std::string& s, uint32_t v, int bytes);
uint32_t crc32(const std::string& bytes);  // PNG's CRC (ISO-HDLC)
// PNG signature + IHDR claiming width x height RGB + IEND: no pixel data.
std::string png_header_only(uint32_t width, uint32_t height);
// A 54-byte 24-bit BMP header (BITMAPINFOHEADER) claiming width x height, no pixel rows.
std::string bmp_header_only(uint32_t width, uint32_t height);

}  // namespace tessera::test
