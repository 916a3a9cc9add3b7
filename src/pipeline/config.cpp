#include "pipeline/config.h"

#include <cstdlib>
#include <filesystem>

#include "io/yaml_map.h"
#include "stages/registry.h"
#include "tessera/error.h"

namespace fs = std::filesystem;

namespace tessera {

std::string config_path(const std::string& value, const std::string& base_dir) {
    std::string out;
    for (size_t i = 0; i < value.size(); ++i) {
        if (value[i] == '$' && i + 1 < value.size() && value[i + 1] == '{') {
            size_t close = value.find('}', i);
            if (close == std::string::npos) fail(value, "unterminated ${...}");
            std::string inner = value.substr(i + 2, close - i - 2), fallback;
            if (size_t dash = inner.find(":-"); dash != std::string::npos) {
                fallback = inner.substr(dash + 2);
                inner = inner.substr(0, dash);
            }
            const char* env = std::getenv(inner.c_str());
            out += env && *env ? env : fallback;
            i = close;
        } else {
            out += value[i];
        }
    }
    if (out.empty()) return out;
    fs::path p(out);
    return (p.is_relative() && !base_dir.empty() ? fs::path(base_dir) / p : p).lexically_normal().string();
}

std::string model_resolve(const std::string& spec) {
    if (fs::is_directory(spec)) return spec;
    if (spec.find('/') == std::string::npos && !spec.empty()) {
        std::vector<std::string> roots;
        if (const char* env = std::getenv("TESSERA_MODELS"))
            for (size_t start = 0; start <= std::string(env).size();) {
                std::string s(env);
                size_t colon = s.find(':', start);
                roots.push_back(s.substr(start, colon == std::string::npos ? std::string::npos : colon - start));
                if (colon == std::string::npos) break;
                start = colon + 1;
            }
        roots.push_back(std::string(TESSERA_SOURCE_DIR) + "/models");
        if (const char* env = std::getenv("TESSERA_SHARED")) roots.push_back(std::string(env) + "/models");
        roots.push_back(std::string(TESSERA_SOURCE_DIR) + "/../shared/models");
        for (const std::string& root : roots)
            if (!root.empty() && fs::is_directory(fs::path(root) / spec)) return (fs::path(root) / spec).lexically_normal().string();
    }
    fail(spec, "model folder not found (give a folder with config.json and model.safetensors, or a model name "
               "found under $TESSERA_MODELS, models/ or the shared models folder)");
}

namespace {

}  // namespace

std::vector<StageSpec> stages_read(const YAML::Node& list, const std::string& file, const std::string& key) {
    std::vector<StageSpec> out;
    if (!list || list.IsNull()) return out;
    if (!list.IsSequence()) fail(yaml_where(file, list), "key '" + key + "': expected a list of stages");
    if (list.size() > 64) fail(yaml_where(file, list), "key '" + key + "': at most 64 stages");
    for (size_t i = 0; i < list.size(); ++i) {
        const YAML::Node item = list[i];
        StageSpec s;
        s.file = file;
        s.where = yaml_where(file, item);
        if (item.IsScalar()) {  // "- noop" shorthand for "- noop: {}"
            s.name = item.Scalar();
        } else if (item.IsMap() && item.size() == 1) {
            s.name = yaml_key(file, item.begin()->first, key + "[" + std::to_string(i) + "]");
            s.params = item.begin()->second;
        } else {
            fail(s.where, "key '" + key + "[" + std::to_string(i) + "]': expected one stage, written 'name: {settings}'");
        }
        // "- fastv" and "- fastv:" take every default, as "- fastv: {}".
        if (!s.params || s.params.IsNull()) s.params = YAML::Node(YAML::NodeType::Map);
        s.context = key + "[" + std::to_string(i) + "]." + s.name;
        out.push_back(std::move(s));
    }
    return out;
}

DatasetSpec dataset_read(YamlMap& doc, const std::string& base) {
    if (!doc.has("dataset")) fail(doc.file(), "key 'dataset' is missing (images: DIR, labels: FILE)");
    YamlMap ds(doc.node("dataset"), doc.file(), "dataset");
    DatasetSpec d;
    d.images = config_path(ds.string("images", ""), base);
    d.labels = config_path(ds.string("labels", ""), base);
    d.limit = ds.integer("limit", 0, 0, 100000000);
    if (d.images.empty()) ds.error("images", "is missing");
    if (d.labels.empty()) ds.error("labels", "is missing");
    ds.finish();
    return d;
}

namespace {

// Keys shared by pipeline and run files.
void read_pipeline_keys(YamlMap& doc, PipelineSpec& p, const std::string& base) {
    if (doc.has("model")) p.model = config_path(doc.string("model", ""), base);
    if (doc.has("stages")) p.stages = stages_read(doc.node("stages"), p.file, "stages");
    p.threads = doc.integer("threads", p.threads, 0, 1024);
    p.batch = doc.integer("batch", p.batch, 1, 4096);
    if (doc.has("dtype")) {
        p.dtype = doc.string("dtype", "");
        p.dtype_from = doc.file();
        if (p.dtype != "auto" && p.dtype != "f32" && p.dtype != "bf16" && p.dtype != "f16")
            doc.error("dtype", "expected auto, f32, bf16 or f16, got '" + p.dtype + "'");
    }
}

std::string folder_of(const std::string& path) { return fs::path(path).parent_path().string(); }

}  // namespace

PipelineSpec pipeline_read(const std::string& path) {
    YAML::Node root = yaml_load_file(path);
    YamlMap doc(root, path, "");
    PipelineSpec p;
    p.file = path;
    read_pipeline_keys(doc, p, folder_of(path));
    doc.finish();
    return p;
}

RunSpec run_config_read(const std::string& path) {
    YAML::Node root = yaml_load_file(path);
    YamlMap doc(root, path, "");
    const std::string base = folder_of(path);
    RunSpec r;
    r.pipeline.file = path;
    if (doc.has("pipeline")) {
        if (doc.has("stages")) doc.error("pipeline", "give either 'pipeline' or 'stages', not both");
        const std::string pipeline_file = config_path(doc.string("pipeline", ""), base);
        PipelineSpec included = pipeline_read(pipeline_file);
        r.pipeline.stages = included.stages;
        r.pipeline.model = included.model;
        r.pipeline.threads = included.threads;
        r.pipeline.batch = included.batch;
    }
    read_pipeline_keys(doc, r.pipeline, base);
    if (r.pipeline.model.empty()) fail(path, "key 'model' is missing");

    r.dataset = dataset_read(doc, base);

    r.class_names = config_path(doc.string("class_names", ""), base);
    r.top_k = doc.integer("top_k", 5, 1, 1000);
    doc.finish();
    return r;
}

std::vector<std::unique_ptr<Stage>> stages_build(const std::vector<StageSpec>& specs, const EncoderShape& shape,
                                                 const DecoderShape* decoder) {
    std::vector<std::unique_ptr<Stage>> out;
    // Roles that one stage at most may take: each is one decision about the
    // same tokens or probabilities, and two stages would fight over it.
    struct Exclusive {
        bool StageRoles::*role;
        const char* what;
        const StageSpec* holder = nullptr;
    };
    Exclusive exclusive[] = {
        {&StageRoles::prunes_after_encoder, "choose the visual tokens passed to the decoder"},
        {&StageRoles::drops_decoder_tokens, "remove visual tokens inside the decoder"},
        {&StageRoles::attention_rows, "rewrite the decoder's attention probabilities"},
        {&StageRoles::contrastive, "add a contrastive decoding stream"},
    };
    for (const StageSpec& s : specs) {
        YamlMap params(s.params, s.file, s.context);
        std::unique_ptr<Stage> stage = stage_create(s.name, params, s.where);
        const StageRoles roles = stage->roles();
        if (roles.decoder && !decoder)
            fail(s.where, "stage '" + s.name + "' acts in a language decoder; this model is an image classifier");
        for (Exclusive& e : exclusive) {
            if (!(roles.*e.role)) continue;
            if (e.holder)
                fail(s.where, "stages '" + e.holder->name + "' (" + e.holder->where + ") and '" + s.name +
                                  "' both " + e.what + "; a chain may hold one of them");
            e.holder = &s;
        }
        stage->check(shape);
        if (decoder) stage->check_decoder(*decoder);
        out.push_back(std::move(stage));
    }
    return out;
}

}  // namespace tessera
