#include "io/timm_config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "tessera/error.h"

namespace tessera {

using nlohmann::json;

json json_read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, "cannot open file");
    std::ostringstream ss;
    ss << f.rdbuf();
    try {
        return json::parse(ss.str());
    } catch (const json::exception& e) {
        fail(path, std::string("invalid JSON: ") + e.what());
    }
}

namespace {
const json* member(const json& obj, const char* key) {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
}
}  // namespace

int json_int(const json& obj, const char* key, int fallback, const std::string& where) {
    const json* v = member(obj, key);
    if (!v) return fallback;
    if (v->is_number_integer()) {
        auto x = v->get<int64_t>();
        if (x >= -(int64_t(1) << 30) && x <= (int64_t(1) << 30)) return int(x);
    }
    if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() && std::abs(v->get<double>()) < 1e9)
        return int(v->get<double>());
    fail(where, std::string("key '") + key + "': expected an integer, got " + v->dump());
}

double json_number(const json& obj, const char* key, double fallback, const std::string& where) {
    const json* v = member(obj, key);
    if (!v) return fallback;
    if (!v->is_number()) fail(where, std::string("key '") + key + "': expected a number, got " + v->dump());
    return v->get<double>();
}

bool json_bool(const json& obj, const char* key, bool fallback, const std::string& where) {
    const json* v = member(obj, key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(where, std::string("key '") + key + "': expected true or false, got " + v->dump());
    return v->get<bool>();
}

std::string json_string(const json& obj, const char* key, const std::string& fallback, const std::string& where) {
    const json* v = member(obj, key);
    if (!v) return fallback;
    if (!v->is_string()) fail(where, std::string("key '") + key + "': expected a string, got " + v->dump());
    return v->get<std::string>();
}

namespace {

void read_triple(const json& cfg, const char* key, float* out, const std::string& where, bool positive) {
    const json* v = member(cfg, key);
    if (!v) return;
    if (!v->is_array() || v->size() != 3)
        fail(where, std::string("key 'pretrained_cfg.") + key + "': expected 3 numbers, got " + v->dump());
    for (int i = 0; i < 3; ++i) {
        if (!(*v)[size_t(i)].is_number())
            fail(where, std::string("key 'pretrained_cfg.") + key + "': expected 3 numbers, got " + v->dump());
        out[i] = (*v)[size_t(i)].get<float>();
        if (positive && !(out[i] > 0.0f))
            fail(where, std::string("key 'pretrained_cfg.") + key + "': values must be positive, got " + v->dump());
    }
}

// timm's transforms_imagenet_eval inputs, with timm's defaults for absent keys.
PreprocessConfig read_pretrained_cfg(const json& cfg, const std::string& where) {
    PreprocessConfig p;
    if (const json* size = member(cfg, "input_size")) {
        if (!size->is_array() || size->size() != 3 || !(*size)[0].is_number_integer() ||
            !(*size)[1].is_number_integer() || !(*size)[2].is_number_integer())
            fail(where, "key 'pretrained_cfg.input_size': expected [channels, height, width], got " + size->dump());
        int channels = (*size)[0].get<int>();
        p.input_height = (*size)[1].get<int>();
        p.input_width = (*size)[2].get<int>();
        if (channels != 3) fail(where, "key 'pretrained_cfg.input_size': only 3-channel (RGB) input is supported");
        if (p.input_height < 1 || p.input_width < 1 || p.input_height > 8192 || p.input_width > 8192)
            fail(where, "key 'pretrained_cfg.input_size': height and width must be in 1..8192, got " + size->dump());
    }
    p.crop_pct = json_number(cfg, "crop_pct", 0.875, where + ": pretrained_cfg");
    if (!(p.crop_pct > 0.0 && p.crop_pct <= 4.0))
        fail(where, "key 'pretrained_cfg.crop_pct': must be in (0, 4], got " + std::to_string(p.crop_pct));
    p.crop_mode = json_string(cfg, "crop_mode", "center", where + ": pretrained_cfg");
    if (p.crop_mode != "center" && p.crop_mode != "squash" && p.crop_mode != "border")
        fail(where, "key 'pretrained_cfg.crop_mode': expected center, squash or border, got '" + p.crop_mode + "'");
    p.interpolation = resample_from_name(json_string(cfg, "interpolation", "bicubic", where),
                                         where + ": key 'pretrained_cfg.interpolation'");
    read_triple(cfg, "mean", p.mean, where, false);
    read_triple(cfg, "std", p.std, where, true);
    return p;
}

}  // namespace

TimmConfig timm_config_read(const std::string& path) {
    json j = json_read_file(path);
    if (!j.is_object()) fail(path, "expected a JSON object at the top level");
    TimmConfig c;
    c.path = path;
    c.architecture = json_string(j, "architecture", "", path);
    if (c.architecture.empty()) fail(path, "key 'architecture' is missing (is this a timm config.json?)");
    c.num_classes = json_int(j, "num_classes", 1000, path);
    if (c.num_classes < 0 || c.num_classes > 1000000)
        fail(path, "key 'num_classes': must be in 0..1000000, got " + std::to_string(c.num_classes));
    c.global_pool = json_string(j, "global_pool", "token", path);
    if (const json* args = member(j, "model_args")) {
        if (!args->is_object()) fail(path, "key 'model_args': expected an object");
        c.model_args = *args;
    }
    const json* pcfg = member(j, "pretrained_cfg");
    if (pcfg && !pcfg->is_object()) fail(path, "key 'pretrained_cfg': expected an object");
    c.preprocess = read_pretrained_cfg(pcfg ? *pcfg : json::object(), path);
    // pretrained_cfg.num_classes, when present, must agree with the top level.
    if (pcfg && member(*pcfg, "num_classes") && json_int(*pcfg, "num_classes", 0, path) != c.num_classes)
        fail(path, "key 'pretrained_cfg.num_classes' disagrees with 'num_classes'");
    return c;
}

}  // namespace tessera
