#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace tessera::test {

std::string shared_dir() {
    if (const char* env = std::getenv("TESSERA_SHARED"); env && *env) return fs::is_directory(env) ? env : "";
    fs::path p = fs::path(TESSERA_SOURCE_DIR) / ".." / "shared";
    return fs::is_directory(p / "models") ? fs::canonical(p).string() : "";
}

std::string source_path(const std::string& relative) { return (fs::path(TESSERA_SOURCE_DIR) / relative).string(); }

namespace {
struct TempRoot {
    fs::path root;
    TempRoot() {
        std::string tmpl = (fs::temp_directory_path() / "tessera-test-XXXXXX").string();
        root = mkdtemp(tmpl.data());
    }
    ~TempRoot() {
        std::error_code ec;
        fs::remove_all(root, ec);
    }
};
}  // namespace

std::string temp_dir() {
    static TempRoot root;
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "global";
    for (char& c : name)
        if (c == '/') c = '_';
    fs::path dir = root.root / (name + "-" + std::to_string(counter++));
    fs::create_directories(dir);
    return dir.string();
}

std::string write_file(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    return path;
}

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

CommandResult run_command(const std::string& command) {
    std::string dir = temp_dir();
    std::string out = dir + "/stdout", err = dir + "/stderr";
    std::string full = "( " + command + " ) >'" + out + "' 2>'" + err + "' </dev/null";
    int status = std::system(full.c_str());
    CommandResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read_file(out);
    r.err = read_file(err);
    return r;
}

std::string reference_python() {
    static std::string cached = [] {
        for (const char* py : {"/usr/bin/python3", "python3"}) {
            std::string cmd = std::string(py) + " -c 'import numpy, PIL' >/dev/null 2>&1";
            if (std::system(cmd.c_str()) == 0) return std::string(py);
        }
        return std::string();
    }();
    return cached;
}

}  // namespace tessera::test

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "tessera/error.h"

namespace tessera::test {

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const tessera::Error& e) {
        return e.what();
    }
    return "(no error)";
}

void masked_attention(const std::vector<float>& qkv, int n, int heads, int d, double scale, const float* key_bias,
                      const std::function<bool(int, int)>& allowed, std::vector<double>& out,
                      std::vector<double>& cls_probs) {
    const int c = heads * d;
    out.assign(size_t(n * c), 0.0);
    cls_probs.assign(size_t(heads * n), 0.0);
    for (int h = 0; h < heads; ++h)
        for (int i = 0; i < n; ++i) {
            std::vector<double> logit(size_t(n), -INFINITY);
            double most = -INFINITY;
            for (int j = 0; j < n; ++j) {
                if (!allowed(i, j)) continue;
                double acc = 0;
                for (int t = 0; t < d; ++t) acc += double(qkv[size_t(i * 3 * c + h * d + t)]) * qkv[size_t(j * 3 * c + c + h * d + t)];
                logit[size_t(j)] = acc * scale + (key_bias ? key_bias[j] : 0.0);
                most = std::max(most, logit[size_t(j)]);
            }
            double sum = 0;
            for (int j = 0; j < n; ++j) sum += allowed(i, j) ? std::exp(logit[size_t(j)] - most) : 0.0;
            for (int j = 0; j < n; ++j) {
                if (!allowed(i, j)) continue;
                const double p = std::exp(logit[size_t(j)] - most) / sum;
                if (i == 0) cls_probs[size_t(h * n + j)] = p;
                for (int t = 0; t < d; ++t) out[size_t(i * c + h * d + t)] += p * qkv[size_t(j * 3 * c + 2 * c + h * d + t)];
            }
        }
}

std::vector<float> random_values(size_t n, uint32_t seed, float scale) {
    std::vector<float> v(n);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (float& x : v) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x = (float(s >> 40) / float(1u << 24) * 2.0f - 1.0f) * scale;
    }
    return v;
}

std::vector<uint16_t> sixteen_bit(const std::vector<float>& values, DType dtype) {
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); ++i)
        bits[i] = dtype == DType::f16 ? f32_to_f16(values[i]) : f32_to_bf16(values[i]);
    return bits;
}

std::string safetensors_bytes(const std::vector<NamedTensor>& tensors) {
    nlohmann::json header = nlohmann::json::object();
    std::string data;
    for (const NamedTensor& t : tensors) {
        size_t begin = data.size();
        data.append(reinterpret_cast<const char*>(t.values.data()), t.values.size() * sizeof(float));
        header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
    }
    std::string h = header.dump();
    uint64_t len = h.size();
    std::string out(reinterpret_cast<const char*>(&len), 8);
    return out + h + data;
}

std::vector<NamedTensor> tiny_vit_tensors(const TinyVit& v) {
    const int64_t c = v.dim, hidden = 4 * v.dim, grid = (v.img / v.patch) * (v.img / v.patch);
    uint32_t seed = v.seed * 1000;
    std::vector<NamedTensor> t;
    auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale, float offset = 0.0f) {
        size_t n = 1;
        for (int64_t d : shape) n *= size_t(d);
        std::vector<float> values = random_values(n, ++seed, scale);
        for (float& x : values) x += offset;
        t.push_back({name, shape, values});
    };
    add("cls_token", {1, 1, c}, 0.5f);
    add("pos_embed", {1, grid + 1, c}, 0.5f);
    add("patch_embed.proj.weight", {c, 3, v.patch, v.patch}, 0.1f);
    add("patch_embed.proj.bias", {c}, 0.1f);
    for (int i = 0; i < v.depth; ++i) {
        const std::string p = "blocks." + std::to_string(i) + ".";
        add(p + "norm1.weight", {c}, 0.2f, 1.0f);
        add(p + "norm1.bias", {c}, 0.1f);
        add(p + "attn.qkv.weight", {3 * c, c}, 0.3f);
        add(p + "attn.qkv.bias", {3 * c}, 0.1f);
        add(p + "attn.proj.weight", {c, c}, 0.2f);
        add(p + "attn.proj.bias", {c}, 0.1f);
        add(p + "norm2.weight", {c}, 0.2f, 1.0f);
        add(p + "norm2.bias", {c}, 0.1f);
        add(p + "mlp.fc1.weight", {hidden, c}, 0.2f);
        add(p + "mlp.fc1.bias", {hidden}, 0.1f);
        add(p + "mlp.fc2.weight", {c, hidden}, 0.1f);
        add(p + "mlp.fc2.bias", {c}, 0.1f);
        if (v.layer_scale) {
            add(p + "ls1.gamma", {c}, 0.3f, 0.5f);
            add(p + "ls2.gamma", {c}, 0.3f, 0.5f);
        }
    }
    add("norm.weight", {c}, 0.2f, 1.0f);
    add("norm.bias", {c}, 0.1f);
    add("head.weight", {v.classes, c}, 0.3f);
    add("head.bias", {v.classes}, 0.1f);
    return t;
}

std::string tiny_vit_config(const TinyVit& v) {
    nlohmann::json cfg = {
        {"architecture", "vit_tiny_test"},
        {"num_classes", v.classes},
        {"global_pool", "token"},
        {"model_args",
         {{"img_size", v.img}, {"patch_size", v.patch}, {"embed_dim", v.dim}, {"depth", v.depth},
          {"num_heads", v.heads}, {"mlp_ratio", 4.0}, {"qkv_bias", true}, {"class_token", true},
          {"act_layer", v.act}}},
        {"pretrained_cfg",
         {{"input_size", {3, v.img, v.img}}, {"interpolation", "bicubic"}, {"crop_pct", 0.875},
          {"mean", {0.5, 0.5, 0.5}}, {"std", {0.5, 0.5, 0.5}}, {"num_classes", v.classes}}}};
    return cfg.dump(2);
}

void write_tiny_vit(const std::string& dir, const TinyVit& v) {
    fs::create_directories(dir);
    write_file(dir + "/config.json", tiny_vit_config(v));
    write_file(dir + "/model.safetensors", safetensors_bytes(tiny_vit_tensors(v)));
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float m = 0.0f;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
        const float d = std::abs(a[i] - b[i]);
        // a NaN on either side is no match (std::max would drop it)
        if (std::isnan(d)) return std::numeric_limits<float>::infinity();
        m = std::max(m, d);
    }
    return m;
}

std::string render_heldout(int count) {
    const std::string dir = temp_dir();
    std::string command = "'";  // built with += (operator+ on literals trips a GCC 12 -Wrestrict false positive)
    command += reference_python();
    command += "' '";
    command += source_path("tools/shapescenes.py");
    command += "' --split heldout --count ";
    command += std::to_string(count);
    command += " --out '";
    command += dir;
    command += "'";
    const CommandResult r = run_command(command);
    if (r.exit_code != 0) throw std::runtime_error("shapescenes.py failed: " + r.err);
    return dir;
}

void append_be32(std::string& s, uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) s.push_back(char((v >> shift) & 0xFF));
}

void append_le(std::string& s, uint32_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
}

uint32_t crc32(const std::string& bytes) {
    uint32_t crc = 0xFFFFFFFFu;
    for (char ch : bytes) {
        crc ^= uint8_t(ch);
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

std::string png_header_only(uint32_t width, uint32_t height) {
    std::string png = "\x89PNG\r\n\x1a\n", ihdr = "IHDR";
    append_be32(ihdr, width);
    append_be32(ihdr, height);
    ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB, deflate, no filter, no interlace
    append_be32(png, 13);
    png += ihdr;
    append_be32(png, crc32(ihdr));
    append_be32(png, 0);
    png += "IEND";
    append_be32(png, crc32("IEND"));
    return png;
}

std::string bmp_header_only(uint32_t width, uint32_t height) {
    std::string bmp = "BM";
    // File size (a lie, as in crafted files), reserved, pixel offset, header size, width, height.
    for (uint32_t v : {54u, 0u, 54u, 40u, width, height}) append_le(bmp, v, 4);
    append_le(bmp, 1, 2);   // planes
    append_le(bmp, 24, 2);  // bits per pixel
    for (int i = 0; i < 6; ++i) append_le(bmp, 0, 4);
    return bmp;
}

}  // namespace tessera::test

namespace tessera::test {

ScopedEnv::ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* previous = std::getenv(name)) had_previous_ = true, previous_ = previous;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
}

ScopedEnv::~ScopedEnv() {
    if (had_previous_) setenv(name_.c_str(), previous_.c_str(), 1);
    else unsetenv(name_.c_str());
}

}  // namespace tessera::test
