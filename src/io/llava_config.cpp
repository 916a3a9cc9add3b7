#include "io/llava_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/timm_config.h"
#include "tessera/error.h"

namespace tessera {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const json* member(const json& obj, const char* key) {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
}

const json& object_or_empty(const json& obj, const char* key, const std::string& where) {
    static const json empty = json::object();
    const json* v = member(obj, key);
    if (!v) return empty;
    if (!v->is_object()) fail(where, std::string("key '") + key + "': expected an object, got " + v->dump());
    return *v;
}

int positive_int(const json& obj, const char* key, int fallback, const std::string& where, int max) {
    int v = json_int(obj, key, fallback, where);
    if (v < 1 || v > max)
        fail(where, std::string("key '") + key + "': must be in 1.." + std::to_string(max) + ", got " +
                        std::to_string(v));
    return v;
}

// A token id or a list of them (eos_token_id is either).
std::vector<int> id_list(const json& obj, const char* key, const std::string& where) {
    const json* v = member(obj, key);
    if (!v) return {};
    std::vector<int> ids;
    auto one = [&](const json& x) {
        if (!x.is_number_integer()) fail(where, std::string("key '") + key + "': expected token ids, got " + v->dump());
        ids.push_back(x.get<int>());
    };
    if (v->is_array())
        for (const json& x : *v) one(x);
    else
        one(*v);
    return ids;
}

ClipVisionConfig read_vision(const json& v, const std::string& where) {
    const std::string w = where + ": vision_config";
    std::string type = json_string(v, "model_type", "clip_vision_model", w);
    if (type != "clip_vision_model")
        fail(where, "key 'vision_config.model_type': '" + type + "' is not supported (clip_vision_model)");
    ClipVisionConfig c;
    c.hidden = positive_int(v, "hidden_size", c.hidden, w, 16384);
    c.intermediate = positive_int(v, "intermediate_size", c.intermediate, w, 1 << 17);
    c.layers = positive_int(v, "num_hidden_layers", c.layers, w, 256);
    c.heads = positive_int(v, "num_attention_heads", c.heads, w, 1024);
    c.image_size = positive_int(v, "image_size", c.image_size, w, 8192);
    c.patch = positive_int(v, "patch_size", c.patch, w, 1024);
    c.channels = positive_int(v, "num_channels", c.channels, w, 3);
    c.layer_norm_eps = float(json_number(v, "layer_norm_eps", c.layer_norm_eps, w));
    c.act = json_string(v, "hidden_act", c.act, w);
    if (c.act != "quick_gelu" && c.act != "gelu")
        fail(where, "key 'vision_config.hidden_act': '" + c.act + "' is not supported (quick_gelu, gelu)");
    if (c.channels != 3) fail(where, "key 'vision_config.num_channels': only RGB (3) is supported");
    if (c.hidden % c.heads)
        fail(where, "key 'vision_config.num_attention_heads' " + std::to_string(c.heads) +
                        " does not divide hidden_size " + std::to_string(c.hidden));
    if (c.image_size % c.patch)
        fail(where, "key 'vision_config.image_size' " + std::to_string(c.image_size) +
                        " is not a multiple of patch_size " + std::to_string(c.patch));
    if (!(c.layer_norm_eps > 0.0f)) fail(where, "key 'vision_config.layer_norm_eps': must be positive");
    return c;
}

// 4.x: rope_theta + rope_scaling {type|rope_type, factor, ...};
// 5.x: rope_parameters {rope_type, rope_theta, factor, ...}.
RopeConfig read_rope(const json& t, const std::string& where) {
    const std::string w = where + ": text_config";
    RopeConfig r;
    r.theta = json_number(t, "rope_theta", r.theta, w);
    const json* scaling = member(t, "rope_parameters");
    const char* key = "rope_parameters";
    if (!scaling) scaling = member(t, "rope_scaling"), key = "rope_scaling";
    if (scaling) {
        const std::string kw = w + "." + key;
        if (!scaling->is_object()) fail(where, std::string("key 'text_config.") + key + "': expected an object");
        r.type = json_string(*scaling, "rope_type", json_string(*scaling, "type", "default", kw), kw);
        r.theta = json_number(*scaling, "rope_theta", r.theta, kw);
        r.factor = json_number(*scaling, "factor", 1.0, kw);
        r.low_freq_factor = json_number(*scaling, "low_freq_factor", r.low_freq_factor, kw);
        r.high_freq_factor = json_number(*scaling, "high_freq_factor", r.high_freq_factor, kw);
        r.original_max_positions =
            json_int(*scaling, "original_max_position_embeddings", r.original_max_positions, kw);
        if (r.type != "default" && r.type != "linear" && r.type != "llama3")
            fail(where, std::string("key 'text_config.") + key + "': unknown rope scaling type '" + r.type +
                            "' (supported: default, linear, llama3)");
        if (r.type != "default" && !(r.factor > 0.0))
            fail(where, std::string("key 'text_config.") + key + ".factor': must be positive");
        if (r.type == "llama3" && !(r.high_freq_factor > r.low_freq_factor && r.original_max_positions > 0))
            fail(where, std::string("key 'text_config.") + key +
                            "': llama3 scaling needs high_freq_factor > low_freq_factor and a positive "
                            "original_max_position_embeddings");
    }
    if (!(r.theta > 0.0)) fail(where, "key 'text_config.rope_theta': must be positive");
    return r;
}

LlamaConfig read_text(const json& t, const std::string& where, int top_vocab) {
    const std::string w = where + ": text_config";
    std::string type = json_string(t, "model_type", "llama", w);
    if (type != "llama" && type != "mistral")
        fail(where, "key 'text_config.model_type': '" + type + "' is not supported (llama)");
    LlamaConfig c;
    c.vocab = positive_int(t, "vocab_size", top_vocab > 0 ? top_vocab : c.vocab, w, 1 << 22);
    c.hidden = positive_int(t, "hidden_size", c.hidden, w, 65536);
    c.intermediate = positive_int(t, "intermediate_size", c.intermediate, w, 1 << 20);
    c.layers = positive_int(t, "num_hidden_layers", c.layers, w, 1024);
    c.heads = positive_int(t, "num_attention_heads", c.heads, w, 1024);
    c.kv_heads = positive_int(t, "num_key_value_heads", c.heads, w, 1024);
    c.head_dim = positive_int(t, "head_dim", c.hidden / c.heads, w, 4096);
    c.max_positions = positive_int(t, "max_position_embeddings", c.max_positions, w, 1 << 24);
    c.rms_norm_eps = float(json_number(t, "rms_norm_eps", c.rms_norm_eps, w));
    c.attention_bias = json_bool(t, "attention_bias", false, w);
    c.mlp_bias = json_bool(t, "mlp_bias", false, w);
    c.tie_embeddings = json_bool(t, "tie_word_embeddings", false, w);
    c.rope = read_rope(t, where);
    std::string act = json_string(t, "hidden_act", "silu", w);
    if (act != "silu") fail(where, "key 'text_config.hidden_act': '" + act + "' is not supported (silu)");
    if (c.heads % c.kv_heads)
        fail(where, "key 'text_config.num_key_value_heads' " + std::to_string(c.kv_heads) +
                        " does not divide num_attention_heads " + std::to_string(c.heads));
    if (c.head_dim % 2) fail(where, "key 'text_config.head_dim': rotary embeddings need an even head_dim");
    if (!(c.rms_norm_eps > 0.0f)) fail(where, "key 'text_config.rms_norm_eps': must be positive");
    if (json_int(t, "pretraining_tp", 1, w) != 1)
        fail(where, "key 'text_config.pretraining_tp': only 1 is supported");
    return c;
}

}  // namespace

std::vector<int> LlavaConfig::feature_indices() const {
    std::vector<int> out;
    for (int l : feature_layers) out.push_back(l >= 0 ? l : vision.layers + 1 + l);
    return out;
}

int LlavaConfig::visual_tokens_per_image() const {
    const int grid = vision.image_size / vision.patch;
    return grid * grid + (select_strategy == "full" ? 1 : 0);
}

LlavaConfig llava_config_read(const std::string& dir) {
    const std::string path = dir + "/config.json";
    if (!fs::exists(path)) fail(dir, "not a model folder: config.json is missing");
    json j = json_read_file(path);
    if (!j.is_object()) fail(path, "expected a JSON object at the top level");
    LlavaConfig c;
    c.path = path;
    std::string type = json_string(j, "model_type", "", path);
    if (type != "llava")
        fail(path, "key 'model_type': expected 'llava', got '" + type + "' (not a LLaVA model folder)");
    c.vision = read_vision(object_or_empty(j, "vision_config", path), path);
    const json& t = object_or_empty(j, "text_config", path);
    c.text = read_text(t, path, member(j, "vocab_size") ? json_int(j, "vocab_size", 0, path) : 0);
    if (!member(t, "tie_word_embeddings") && member(j, "tie_word_embeddings"))
        c.text.tie_embeddings = json_bool(j, "tie_word_embeddings", false, path);

    // 4.x: image_token_index; 5.x configs may say image_token_id.
    c.image_token_id = json_int(j, "image_token_index", json_int(j, "image_token_id", c.image_token_id, path), path);
    if (c.image_token_id < 0) fail(path, "key 'image_token_index': must not be negative");
    if (const json* fl = member(j, "vision_feature_layer")) {
        c.feature_layers.clear();
        if (fl->is_array()) {
            for (const json& x : *fl) {
                if (!x.is_number_integer()) fail(path, "key 'vision_feature_layer': expected integers, got " + fl->dump());
                c.feature_layers.push_back(x.get<int>());
            }
        } else if (fl->is_number_integer()) {
            c.feature_layers.push_back(fl->get<int>());
        } else {
            fail(path, "key 'vision_feature_layer': expected an integer or a list, got " + fl->dump());
        }
        if (c.feature_layers.empty()) fail(path, "key 'vision_feature_layer': empty list");
    }
    for (int idx : c.feature_indices())
        if (idx < 0 || idx > c.vision.layers)
            fail(path, "key 'vision_feature_layer': layer out of range for a " + std::to_string(c.vision.layers) +
                           "-layer vision tower");
    c.select_strategy = json_string(j, "vision_feature_select_strategy", c.select_strategy, path);
    if (c.select_strategy != "default" && c.select_strategy != "full")
        fail(path, "key 'vision_feature_select_strategy': expected 'default' or 'full', got '" + c.select_strategy +
                       "'");
    c.projector_act = json_string(j, "projector_hidden_act", c.projector_act, path);
    if (c.projector_act != "gelu")
        fail(path, "key 'projector_hidden_act': '" + c.projector_act + "' is not supported (gelu)");
    c.projector_bias = json_bool(j, "multimodal_projector_bias", true, path);
    c.dtype = json_string(j, "torch_dtype", json_string(j, "dtype", c.dtype, path), path);
    c.bos_id = json_int(t, "bos_token_id", c.bos_id, path);
    c.pad_id = json_int(j, "pad_token_id", json_int(t, "pad_token_id", c.pad_id, path), path);
    c.eos_ids = id_list(t, "eos_token_id", path);
    if (c.eos_ids.empty()) c.eos_ids = {2};

    const std::string gen_path = dir + "/generation_config.json";
    if (fs::exists(gen_path)) {
        json g = json_read_file(gen_path);
        if (!g.is_object()) fail(gen_path, "expected a JSON object at the top level");
        std::vector<int> eos = id_list(g, "eos_token_id", gen_path);
        if (!eos.empty()) c.eos_ids = eos;
    }
    return c;
}

// ---------------------------------------------------------------- image processor

namespace {

void read_triple(const json& obj, const char* key, float* out, const std::string& where, bool positive) {
    const json* v = member(obj, key);
    if (!v) return;
    if (v->is_number()) {  // one value for all channels
        for (int i = 0; i < 3; ++i) out[i] = v->get<float>();
    } else {
        if (!v->is_array() || v->size() != 3)
            fail(where, std::string("key '") + key + "': expected 3 numbers, got " + v->dump());
        for (int i = 0; i < 3; ++i) {
            if (!(*v)[size_t(i)].is_number())
                fail(where, std::string("key '") + key + "': expected 3 numbers, got " + v->dump());
            out[i] = (*v)[size_t(i)].get<float>();
        }
    }
    for (int i = 0; i < 3; ++i)
        if (positive && !(out[i] > 0.0f))
            fail(where, std::string("key '") + key + "': values must be positive, got " + v->dump());
}

// PIL's resample codes as transformers stores them.
Resample resample_from_code(int code, const std::string& where) {
    switch (code) {
        case 0: return Resample::nearest;
        case 2: return Resample::bilinear;
        case 3: return Resample::bicubic;
        default: fail(where, "key 'resample': PIL filter " + std::to_string(code) +
                                 " is not supported (0 nearest, 2 bilinear, 3 bicubic)");
    }
}

}  // namespace

ClipPreprocessConfig clip_preprocess_read(const std::string& dir) {
    std::string path = dir + "/preprocessor_config.json";
    json p;
    if (fs::exists(path)) {
        p = json_read_file(path);
        if (!p.is_object()) fail(path, "expected a JSON object at the top level");
    } else {
        path = dir + "/processor_config.json";
        if (!fs::exists(path))
            fail(dir, "no image processor settings: neither preprocessor_config.json nor processor_config.json");
        json top = json_read_file(path);
        if (!top.is_object()) fail(path, "expected a JSON object at the top level");
        const json* nested = member(top, "image_processor");
        if (!nested || !nested->is_object())
            fail(path, "key 'image_processor' is missing (expected the image processor's settings inside)");
        p = *nested;
    }
    ClipPreprocessConfig c;
    c.path = path;
    std::string type = json_string(p, "image_processor_type", "CLIPImageProcessor", path);
    if (type.rfind("CLIPImageProcessor", 0) != 0 && type.rfind("LlavaImageProcessor", 0) != 0)
        fail(path, "key 'image_processor_type': '" + type + "' is not supported (CLIPImageProcessor)");
    c.do_resize = json_bool(p, "do_resize", true, path);
    c.do_center_crop = json_bool(p, "do_center_crop", true, path);
    c.do_rescale = json_bool(p, "do_rescale", true, path);
    c.do_normalize = json_bool(p, "do_normalize", true, path);
    if (json_bool(p, "do_pad", false, path)) fail(path, "key 'do_pad': padding to a square is not supported");
    if (const json* size = member(p, "size")) {
        if (size->is_number_integer()) {
            c.shortest_edge = size->get<int>();
        } else if (size->is_object() && member(*size, "shortest_edge")) {
            c.shortest_edge = json_int(*size, "shortest_edge", 0, path + ": size");
        } else {
            fail(path, "key 'size': expected {\"shortest_edge\": N}, got " + size->dump());
        }
    }
    if (const json* crop = member(p, "crop_size")) {
        if (crop->is_number_integer()) {
            c.crop_height = c.crop_width = crop->get<int>();
        } else if (crop->is_object()) {
            c.crop_height = json_int(*crop, "height", 0, path + ": crop_size");
            c.crop_width = json_int(*crop, "width", 0, path + ": crop_size");
        } else {
            fail(path, "key 'crop_size': expected {\"height\": H, \"width\": W}, got " + crop->dump());
        }
    }
    if (c.shortest_edge < 1 || c.shortest_edge > 8192) fail(path, "key 'size.shortest_edge': must be in 1..8192");
    if (c.crop_height < 1 || c.crop_width < 1 || c.crop_height > 8192 || c.crop_width > 8192)
        fail(path, "key 'crop_size': height and width must be in 1..8192");
    c.resample = resample_from_code(json_int(p, "resample", 3, path), path);
    c.rescale_factor = json_number(p, "rescale_factor", c.rescale_factor, path);
    read_triple(p, "image_mean", c.mean, path, false);
    read_triple(p, "image_std", c.std, path, true);
    return c;
}

Image clip_preprocess_geometry(const Image& image, const ClipPreprocessConfig& cfg) {
    Image img = image;
    if (cfg.do_resize) {
        // transformers' get_resize_output_image_size(default_to_square=False).
        const bool portrait = img.width <= img.height;
        const int short_side = portrait ? img.width : img.height, long_side = portrait ? img.height : img.width;
        const int new_short = cfg.shortest_edge;
        const int new_long = int(double(new_short) * double(long_side) / double(short_side));
        const int w = portrait ? new_short : new_long, h = portrait ? new_long : new_short;
        if (w != img.width || h != img.height) img = image_resize_pillow(img, w, h, cfg.resample);
    }
    if (!cfg.do_center_crop) return img;
    // transformers' center_crop: floor offsets; zero padding when the crop is larger.
    const int ch = cfg.crop_height, cw = cfg.crop_width;
    const int top = int(std::floor((img.height - ch) / 2.0)), left = int(std::floor((img.width - cw) / 2.0));
    const int pad_top = ch > img.height ? (ch - img.height + 1) / 2 : 0;
    const int pad_left = cw > img.width ? (cw - img.width + 1) / 2 : 0;
    Image out{cw, ch, std::vector<uint8_t>(size_t(cw) * size_t(ch) * 3, 0)};
    for (int y = 0; y < ch; ++y) {
        const int sy = y + std::max(0, top + pad_top) - pad_top;
        if (sy < 0 || sy >= img.height) continue;
        for (int x = 0; x < cw; ++x) {
            const int sx = x + std::max(0, left + pad_left) - pad_left;
            if (sx < 0 || sx >= img.width) continue;
            for (int k = 0; k < 3; ++k)
                out.rgb[(size_t(y) * size_t(cw) + size_t(x)) * 3 + size_t(k)] =
                    img.rgb[(size_t(sy) * size_t(img.width) + size_t(sx)) * 3 + size_t(k)];
        }
    }
    return out;
}

void clip_preprocess_image(const Image& image, const ClipPreprocessConfig& cfg, float* out) {
    const Image img = clip_preprocess_geometry(image, cfg);
    const size_t plane = size_t(img.width) * size_t(img.height);
    for (int k = 0; k < 3; ++k)
        for (size_t i = 0; i < plane; ++i) {
            // rescale in double then float32, as transformers' rescale(); normalize in float32.
            float v = float(img.rgb[i * 3 + size_t(k)]);
            if (cfg.do_rescale) v = float(double(img.rgb[i * 3 + size_t(k)]) * cfg.rescale_factor);
            if (cfg.do_normalize) v = (v - cfg.mean[k]) / cfg.std[k];
            out[size_t(k) * plane + i] = v;
        }
}

}  // namespace tessera
