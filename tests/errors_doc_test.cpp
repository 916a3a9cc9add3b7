// docs/errors.md, proved true: hostile inputs (corrupt, truncated and lying
// weights, malformed configs, crafted images, broken tokenizers, impossible
// stage settings, tight memory limits, bad command lines) go to the real
// readers and to the tessera binary, and every message they produce must
// match the row of the document that the trigger names.
//
// The trigger table is also the release notes' hostile-file table: the test
// prints one `[ hostile ]` line per trigger (id | input | outcome), then the
// documented rows that no trigger reaches (`[ untriggered ]`).
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "io/image.h"
#include "io/labels.h"
#include "io/preprocess.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "models/llama.h"
#include "models/llava.h"
#include "models/sampling.h"
#include "models/vit.h"
#include "pipeline/config.h"
#include "pipeline/report.h"
#include "tessera/analyze.h"
#include "tessera/arena.h"
#include "tessera/captioner.h"
#include "tessera/classifier.h"
#include "tessera/error.h"
#include "tessera/memory.h"
#include "test_support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::NamedTensor;
using test::temp_dir;
using test::write_file;

// ======================================================= the document

struct DocRow {
    std::string id;
    std::string message;  // the template, <placeholders> included
};

// Cells of a Markdown table row, split at unescaped pipes (GFM writes a pipe
// inside a code span as \|).
std::vector<std::string> table_cells(const std::string& line) {
    std::vector<std::string> cells;
    std::string cell;
    for (size_t i = 1; i < line.size(); ++i) {
        if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '|') {
            cell += '|';
            ++i;
        } else if (line[i] == '|') {
            cells.push_back(cell);
            cell.clear();
        } else {
            cell += line[i];
        }
    }
    for (std::string& c : cells) {
        const size_t b = c.find_first_not_of(' '), e = c.find_last_not_of(' ');
        c = b == std::string::npos ? "" : c.substr(b, e - b + 1);
    }
    return cells;
}

// The text of a code span `...` or `` ... `` (CommonMark drops one space on
// each side when both are there); "" when the cell is not one code span.
std::string code_span_text(const std::string& cell) {
    size_t n = 0;
    while (n < cell.size() && cell[n] == '`') ++n;
    if (n == 0 || cell.size() < 2 * n || cell.compare(cell.size() - n, n, std::string(n, '`')) != 0) return "";
    std::string text = cell.substr(n, cell.size() - 2 * n);
    if (text.size() >= 2 && text.front() == ' ' && text.back() == ' ' && text.find_first_not_of(' ') != std::string::npos)
        text = text.substr(1, text.size() - 2);
    return text;
}

// Rows "| ID | cause | `message` |" of every table, in document order.
std::vector<DocRow> doc_rows(const std::string& path) {
    static const std::regex id_re("^[A-Z]+-[0-9]+$");
    std::ifstream in(path);
    std::vector<DocRow> rows;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("| ", 0) != 0) continue;
        const std::vector<std::string> cells = table_cells(line);
        if (cells.size() == 3 && std::regex_match(cells[0], id_re)) rows.push_back({cells[0], code_span_text(cells[2])});
    }
    return rows;
}

std::vector<DocRow> the_document() { return doc_rows(std::string(TESSERA_SOURCE_DIR) + "/docs/errors.md"); }

// A template as an anchored regex: literal text escaped, each <placeholder>
// any non-empty text.
std::string template_pattern(const std::string& t) {
    static const std::string special = R"(\^$.|?*+()[]{}/)";
    std::string re;
    for (size_t i = 0; i < t.size(); ++i) {
        const size_t close = t[i] == '<' ? t.find('>', i + 1) : std::string::npos;
        if (close != std::string::npos && close > i + 1 && t.find('<', i + 1) > close) {
            re += ".+?";
            i = close;
            continue;
        }
        if (special.find(t[i]) != std::string::npos) re += '\\';
        re += t[i];
    }
    return re;
}

bool template_matches(const std::string& t, const std::string& message) {
    return std::regex_match(message, std::regex(template_pattern(t)));
}

// ======================================================= running a trigger

struct Outcome {
    std::string message;  // the Error's what(), or the CLI's text after "tessera: error: "
    int exit_code = -1;   // the CLI's exit status; -1 for a library call
};
using Run = std::function<Outcome()>;

// The message of the tessera::Error that f throws, "(no error)" when none.
// Other exceptions are shown too, so a wrong type fails the match, not the run.
Outcome api(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return {e.what()};
    } catch (const std::exception& e) {
        return {std::string("(not a tessera::Error) ") + e.what()};
    }
    return {"(no error)"};
}
Run call(std::function<void()> f) {
    return [f] { return api(f); };
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// `tessera ARGS` (ENV assignments before it), its one error line taken apart.
Outcome cli(const std::string& args, const std::string& env = "") {
    const test::CommandResult r = test::run_command(env + " " + quoted(TESSERA_BINARY) + " " + args);
    const std::string prefix = "tessera: error: ";
    Outcome o{"", r.exit_code};
    if (r.exit_code == 0)
        o.message = "(no error)";
    else if (r.err.rfind(prefix, 0) == 0 && r.err.find('\n') == r.err.size() - 1)
        o.message = r.err.substr(prefix.size(), r.err.size() - prefix.size() - 1);
    else
        o.message = "(not one error line) " + r.err;
    return o;
}
Run cli_run(std::string args) {
    return [args] { return cli(args); };
}

// TESSERA_MEMORY_LIMIT for one scope.
struct MemoryLimit {
    explicit MemoryLimit(const char* value) { setenv("TESSERA_MEMORY_LIMIT", value, 1); }
    ~MemoryLimit() { unsetenv("TESSERA_MEMORY_LIMIT"); }
    MemoryLimit(const MemoryLimit&) = delete;
    MemoryLimit& operator=(const MemoryLimit&) = delete;
};

using Edit = std::function<void(json&)>;

void edit_json(const std::string& path, const Edit& edit) {
    json j = json::parse(std::ifstream(path));
    edit(j);
    std::ofstream(path) << j.dump(2);
}

// ======================================================= hostile inputs: weights

// A safetensors file from its parts: the 8-byte length field, then the rest.
std::string st_bytes(uint64_t length_field, const std::string& rest) {
    return std::string(reinterpret_cast<const char*>(&length_field), 8) + rest;
}
std::string st_raw(const std::string& header, const std::string& data = "") {
    return st_bytes(header.size(), header + data);
}

// The bytes of `tensors` with the JSON header rewritten by `edit` (data kept).
std::string st_with_header(const std::vector<NamedTensor>& tensors, const Edit& edit) {
    const std::string bytes = test::safetensors_bytes(tensors);
    uint64_t len = 0;
    std::memcpy(&len, bytes.data(), 8);
    json header = json::parse(bytes.substr(8, size_t(len)));
    edit(header);
    return st_raw(header.dump(), bytes.substr(8 + size_t(len)));
}

Run st_open(std::string bytes) {
    return [bytes] {
        const std::string path = write_file(temp_dir() + "/model.safetensors", bytes);
        return api([&] { SafeTensors file(path); });
    };
}
Run st_header(const json& header, size_t data_bytes = 16) {
    return st_open(st_raw(header.dump(), std::string(data_bytes, '\0')));
}
// One header entry: dtype, shape and data_offsets [begin, end].
json st_entry(const json& shape, uint64_t begin, uint64_t end, const std::string& dtype = "F32") {
    return {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, end}}};
}
// A 4-float entry with one field replaced.
json st_entry_with(const std::string& key, const json& value) {
    json e = st_entry({4}, 0, 16);
    e[key] = value;
    return e;
}

// A sharded folder: model.safetensors.index.json as given, and shards each
// holding the named tensors (2 floats).
Run st_sharded(json index, std::map<std::string, std::vector<std::string>> shards) {
    return [=] {
        const std::string dir = temp_dir();
        write_file(dir + "/model.safetensors.index.json", index.dump());
        for (const auto& [file, names] : shards) {
            std::vector<NamedTensor> t;
            for (const std::string& n : names) t.push_back({n, {2}, {1.0f, 2.0f}});
            write_file(dir + "/" + file, test::safetensors_bytes(t));
        }
        return api([&] { SafeTensorsSet set(dir); });
    };
}

// ======================================================= hostile inputs: models

using EditTensors = std::function<void(std::vector<NamedTensor>&)>;

// A tiny random timm ViT (32x32 images, 8x8 patches, dim 32, depth 3, 10 classes).
std::string vit_folder(const Edit& edit_config = {}, const EditTensors& edit_tensors = {}) {
    const std::string dir = temp_dir() + "/vit";
    fs::create_directories(dir);
    json cfg = json::parse(test::tiny_vit_config({}));
    if (edit_config) edit_config(cfg);
    write_file(dir + "/config.json", cfg.dump(2));
    std::vector<NamedTensor> tensors = test::tiny_vit_tensors({});
    if (edit_tensors) edit_tensors(tensors);
    write_file(dir + "/model.safetensors", test::safetensors_bytes(tensors));
    return dir;
}
// The tiny ViT with the weights' header rewritten (the data kept).
std::string vit_lying_header(const Edit& edit) {
    const std::string dir = vit_folder();
    write_file(dir + "/model.safetensors", st_with_header(test::tiny_vit_tensors({}), edit));
    return dir;
}

Outcome vit_load_error(const std::string& dir) {
    return api([&] {
        VitModel m;
        vit_load(m, dir);
    });
}
Run vit_broken(std::function<std::string()> make_folder) {
    return [make_folder] { return vit_load_error(make_folder()); };
}
Run vit_config(Edit edit) {
    return vit_broken([edit] { return vit_folder(edit); });
}
Run vit_args(Edit edit) {
    return vit_config([edit](json& c) { edit(c["model_args"]); });
}
Run vit_pretrained(Edit edit) {
    return vit_config([edit](json& c) { edit(c["pretrained_cfg"]); });
}
Run vit_blocks(json block_attention) {
    return vit_args([block_attention](json& a) { a["block_attention"] = block_attention; });
}
Run vit_tensors(EditTensors edit) {
    return vit_broken([edit] { return vit_folder({}, edit); });
}
json global_block() { return {{"kind", "global"}}; }
// Block 0 of three given, blocks 1 and 2 global.
json first_block(const json& block) { return {block, global_block(), global_block()}; }

void drop_tensors(std::vector<NamedTensor>& t, const std::string& prefix) {
    std::erase_if(t, [&](const NamedTensor& x) { return x.name.rfind(prefix, 0) == 0; });
}

std::string fixture(const std::string& name = "tiny-llava-gqa") {
    return test::source_path("tests/fixtures/llava/" + name);
}

// A writable copy of a LLaVA fixture folder.
std::string llava_folder(const std::string& name = "tiny-llava-gqa") {
    const std::string dir = temp_dir() + "/" + name;
    fs::copy(fixture(name), dir, fs::copy_options::recursive);
    fs::remove_all(dir + "/reference");
    return dir;
}

Outcome llava_error(const std::string& dir, const LlavaLoadOptions& options = {}) {
    return api([&] {
        LlavaModel m;
        llava_load(m, dir, options);
    });
}
// The gqa fixture (or `name`) broken by `breakit`, then loaded.
Run llava_broken(std::function<void(const std::string&)> breakit, std::string name = "tiny-llava-gqa") {
    return [=] {
        const std::string dir = llava_folder(name);
        breakit(dir);
        return llava_error(dir);
    };
}
Run llava_json(std::string file, Edit edit, std::string name = "tiny-llava-gqa") {
    return llava_broken([=](const std::string& dir) { edit_json(dir + "/" + file, edit); }, name);
}
Run llava_config(Edit edit) { return llava_json("config.json", edit); }
Run llava_vision(Edit edit) {
    return llava_config([edit](json& c) { edit(c["vision_config"]); });
}
Run llava_text(Edit edit) {
    return llava_config([edit](json& c) { edit(c["text_config"]); });
}
// The gqa fixture keeps its image processor settings inside processor_config.json.
Run llava_processor(Edit edit) {
    return llava_json("processor_config.json", [edit](json& j) { edit(j["image_processor"]); });
}
void remove_weights(const std::string& dir) {
    for (const auto& f : fs::directory_iterator(dir))
        if (f.path().extension() == ".safetensors" || f.path().filename() == "model.safetensors.index.json")
            fs::remove(f.path());
}
// The gqa fixture's weights as one model.safetensors, without the tensors `drop` names.
void single_file_without(const std::string& dir, const std::function<bool(const std::string&)>& drop) {
    std::vector<NamedTensor> kept;
    {
        SafeTensorsSet set(dir);
        for (const auto& [name, e] : set.entries()) {
            if (drop(name)) continue;
            kept.push_back({name, e.info->shape, std::vector<float>(size_t(e.info->numel()))});
            e.file->read_f32(name, e.info->shape, kept.back().values.data());
        }
    }
    remove_weights(dir);
    write_file(dir + "/model.safetensors", test::safetensors_bytes(kept));
}

// The gqa fixture loaded once (f32, without its tokenizer) for the run-time triggers.
const LlavaModel& llava_model() {
    static const std::unique_ptr<LlavaModel> m = [] {
        auto model = std::make_unique<LlavaModel>();
        llava_load(*model, fixture(), {.dtype = "f32", .load_tokenizer = false});
        return model;
    }();
    return *m;
}

// A captioner on the gqa fixture generating for a patterned image (or none).
Run caption(GenerateOptions g, std::string stage_list = "", bool encode = true) {
    return [=] {
        const std::string pipeline = write_file(temp_dir() + "/p.yaml", "model: " + fixture() + "\nstages:\n" + stage_list);
        return api([&] {
            Captioner cap({.model = "", .pipeline = pipeline, .threads = 1});
            std::vector<float> pixels(size_t(cap.input_floats()));
            for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = float(i % 97) / 50.0f - 1.0f;
            if (encode) cap.encode_pixels(pixels.data());
            cap.generate(g);
        });
    };
}
GenerateOptions prompt(const std::string& text, int max_new_tokens = 2) {
    GenerateOptions g;
    g.prompt = text, g.max_new_tokens = max_new_tokens;
    return g;
}
std::string long_prompt() {
    std::string p;
    for (int i = 0; i < 1200; ++i) p += "a b ";
    return p;
}

// ======================================================= hostile inputs: images

using test::bmp_header_only;
using test::png_header_only;

// SOI + a baseline frame header (3 components) claiming width x height.
std::string jpeg_frame(uint32_t width, uint32_t height) {
    std::string jpeg = "\xFF\xD8\xFF\xC0" + std::string("\x00\x11\x08", 3);
    for (uint32_t v : {height, width}) jpeg += {char(v >> 8), char(v & 0xFF)};
    jpeg.push_back(3);
    for (char id = 1; id <= 3; ++id) jpeg += std::string{id, '\x11', '\x00'};
    return jpeg;
}
const std::string jpeg_end = "\xFF\xD9";

// A real JPEG (143x97) from the test fixtures.
std::string scene_jpeg() { return test::read_file(fixture("") + "/scene-143x97.jpg"); }

Image gradient(int width, int height) {
    Image img{width, height, std::vector<uint8_t>(size_t(width) * size_t(height) * 3)};
    for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t(i * 7 % 251);
    return img;
}
std::string png_file(const std::string& dir, int width = 40, int height = 30) {
    const std::string path = dir + "/a.png";
    image_write_png(path, gradient(width, height));
    return path;
}

// `tessera caption --requests` (f32, 1 thread) with one request whose
// "pipeline" value is the JSON `value`, beside a p.yaml holding `yaml`.
Run request_pipeline(const std::string& value, const std::string& yaml = "stages: []\n") {
    return [=] {
        const std::string dir = temp_dir();
        png_file(dir);
        write_file(dir + "/p.yaml", yaml);
        const std::string f = write_file(dir + "/q.jsonl", "{\"image\": \"a.png\", \"pipeline\": " + value + "}\n");
        return cli("caption --model " + quoted(fixture()) + " --dtype f32 --threads 1 --max-new-tokens 1 --requests " +
                   quoted(f));
    };
}

Run image_bytes(std::function<std::string()> bytes, std::string name = "image.png", ImageLimits limits = {}) {
    return [=] {
        const std::string path = write_file(temp_dir() + "/" + name, bytes());
        return api([&] { image_decode_file(path, limits); });
    };
}
Run image(std::string bytes, std::string name = "image.png") {
    return image_bytes([bytes] { return bytes; }, name);
}
Run geometry(Image img, std::function<void(PreprocessConfig&)> edit) {
    return call([=] {
        PreprocessConfig cfg;
        edit(cfg);
        preprocess_geometry(img, cfg);
    });
}

// ======================================================= hostile inputs: labels and tokenizers

Run class_names(std::string text) {
    return call([text] { class_names_read(write_file(temp_dir() + "/classes.tsv", text)); });
}
Run labels(std::string text) {
    return call([text] { dataset_labels_read(write_file(temp_dir() + "/labels.tsv", text), 10); });
}

// A minimal valid tokenizer.json: BPE over "a", "b" with the merge "a b".
json bpe_tokenizer() {
    return {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}}};
}

std::string tokenizer_folder(const json& tokenizer, const std::map<std::string, std::string>& files = {}) {
    const std::string dir = temp_dir() + "/tok";
    fs::create_directories(dir);
    if (!tokenizer.is_null()) write_file(dir + "/tokenizer.json", tokenizer.dump(2));
    for (const auto& [name, text] : files) write_file(dir + "/" + name, text);
    return dir;
}
Run tokenizer(json tokenizer_json, std::map<std::string, std::string> files = {}, bool transformers5 = false) {
    return call([=] { Tokenizer::load(tokenizer_folder(tokenizer_json, files), {.transformers5 = transformers5}); });
}
Run tokenizer_edit(Edit edit) {
    json j = bpe_tokenizer();
    edit(j);
    return tokenizer(j);
}
Run tokenizer_model(Edit edit) {
    return tokenizer_edit([edit](json& j) { edit(j["model"]); });
}
Run tokenizer_pre(json pre) {
    return tokenizer_edit([pre](json& j) { j["pre_tokenizer"] = pre; });
}
Run tokenizer_file(std::string file, std::string text) { return tokenizer(bpe_tokenizer(), {{file, text}}); }
Run sentencepiece(std::string model_bytes, bool transformers5) {
    return tokenizer(nullptr, {{"tokenizer.model", model_bytes}}, transformers5);
}
Run template_processing(json single, json special_tokens) {
    return tokenizer_edit([=](json& j) {
        j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"special_tokens", special_tokens}};
    });
}
Run encode(json tokenizer_json, std::string text) {
    return call([=] { Tokenizer::load(tokenizer_folder(tokenizer_json))->encode(text, true); });
}

// ======================================================= hostile inputs: YAML and stages

std::string yaml_file(const std::string& text, const std::string& name = "pipeline.yaml") {
    return write_file(temp_dir() + "/" + name, text);
}
Run pipeline(std::string text) {
    return call([text] { pipeline_read(yaml_file(text)); });
}
Run run_yaml(std::string text) {
    return call([text] { run_config_read(yaml_file(text, "run.yaml")); });
}
Run report_yaml(std::string text) {
    return call([text] { report_config_read(yaml_file(text, "report.yaml")); });
}

// The tiny ViT's encoder (depth 3, 2 heads, dim 32, 4x4 patches) with `prefix` tokens.
EncoderShape vit_shape(int prefix = 1) { return {3, 2, 32, prefix, 4, 4}; }

// `stages:` holding `list` (YAML lines "  - ..."), built for the tiny ViT's
// encoder and, with `decoder`, the gqa fixture's decoder (3 layers, hidden
// 64) whose files are in `model_dir` (a fresh folder when "").
Run stage_chain(std::string list, bool decoder = false, EncoderShape shape = vit_shape(),
                std::function<std::string()> model_dir = {}) {
    return call([=] {
        const PipelineSpec spec = pipeline_read(yaml_file("stages:\n" + list));
        DecoderShape d;
        d.layers = 3, d.heads = 4, d.kv_heads = 2, d.head_dim = 16, d.hidden = 64;
        d.model_dir = model_dir ? model_dir() : temp_dir();
        stages_build(spec.stages, shape, decoder ? &d : nullptr);
    });
}
Run stage(const std::string& one, bool decoder = false) { return stage_chain("  - " + one + "\n", decoder); }
// The decoder's model folder holding one file.
std::function<std::string()> folder_with(std::string name, std::function<std::string()> bytes) {
    return [=] {
        const std::string dir = temp_dir();
        write_file(dir + "/" + name, bytes());
        return dir;
    };
}
std::function<std::string()> router(std::vector<NamedTensor> tensors) {
    return folder_with("dyvte_router.safetensors", [tensors] { return test::safetensors_bytes(tensors); });
}
std::function<std::string()> sinks(std::string text) {
    return folder_with("var_sinks.json", [text] { return text; });
}

// A classification through the tiny ViT whose blocks follow `block_attention`
// (null: all global) with the stage chain `list`.
Run vit_forward(json block_attention, std::string list) {
    return call([=] {
        const std::string dir = vit_folder([&](json& c) {
            if (!block_attention.is_null()) c["model_args"]["block_attention"] = block_attention;
        });
        Classifier clf({.model = "", .pipeline = yaml_file("model: " + dir + "\nstages:\n" + list), .threads = 1, .max_batch = 1});
        std::vector<float> pixels(size_t(clf.input_floats()), 0.25f);
        clf.classify(pixels.data(), 1, 1);
    });
}

// A caption report over `requests` with `vocabulary` (the requests file absent when null).
Run caption_report(json requests, std::string vocabulary = R"({"objects": ["red circle"]})") {
    return call([=] {
        const std::string dir = temp_dir();
        if (!requests.is_null()) write_file(dir + "/requests.jsonl", requests.get<std::string>());
        write_file(dir + "/vocabulary.json", vocabulary);
        const std::string cfg = write_file(dir + "/r.yaml", "model: m\ntask: caption\ndataset: {requests: " + dir +
                                                                "/requests.jsonl, vocabulary: " + dir +
                                                                "/vocabulary.json}\npipelines:\n  full: []\n");
        report_run(report_config_read(cfg), dir + "/out", false);
    });
}
const std::string a_request = R"("image": "a.png", "prompt": "Q")";
Run request(const std::string& fields) { return caption_report("{" + a_request + ", " + fields + "}\n"); }

// `tessera run` over one labelled image with the tiny ViT, its output folder
// prepared by `prepare` (which may run it once first).
struct RunFolder {
    std::string dir, config, out;
    RunFolder() : dir(temp_dir()), out(dir + "/out") {
        const std::string model = vit_folder();
        fs::create_directories(dir + "/images");
        png_file(dir + "/images");
        write_file(dir + "/labels.tsv", "a.png\t3\n");
        config = write_file(dir + "/run.yaml", "model: " + model + "\ndataset: {images: " + dir +
                                                   "/images, labels: " + dir + "/labels.tsv}\n");
    }
    Outcome run() const { return cli("run --no-progress " + quoted(config) + " --out " + quoted(out)); }
    Outcome report() const {
        const std::string spec = write_file(dir + "/report.yaml", test::read_file(config) + "pipelines:\n  plain: []\n");
        return cli("report --no-progress " + quoted(spec) + " --out " + quoted(out));
    }
};
Run runner(std::function<void(const RunFolder&)> prepare, bool report = false) {
    return [=] {
        RunFolder r;
        prepare(r);
        return report ? r.report() : r.run();
    };
}

// `tessera ARGS` on the tiny ViT and a 40x30 PNG: ARGS with MODEL and IMAGE replaced.
Run cli_vit(std::string args, std::string env = "", Edit edit_config = {}) {
    return [=] {
        std::string a = args;
        for (auto [key, value] : {std::pair<std::string, std::string>{"MODEL", quoted(vit_folder(edit_config))},
                                  {"IMAGE", quoted(png_file(temp_dir()))}})
            if (const size_t at = a.find(key); at != std::string::npos) a.replace(at, key.size(), value);
        return cli(a, env);
    };
}

// ======================================================= the trigger table

struct Trigger {
    std::string id;
    std::string input;  // the hostile input, in a few words
    Run run;
};

std::vector<Trigger> weight_triggers() {
    const uint64_t t40 = uint64_t(1) << 40;
    return {
        {"ST-1", "weights file missing", call([] { SafeTensors f(temp_dir() + "/none.safetensors"); })},
        {"ST-3", "weights path is a folder", call([] { SafeTensors f(temp_dir()); })},
        {"ST-4", "5-byte file", st_open("\x01\x02\x03\x04\x05")},
        {"ST-6", "header length field 2^40", st_open(st_bytes(t40, "{}"))},
        {"ST-7", "header length 1000 in an 18-byte file", st_open(st_bytes(1000, "{\"a\": 1}xx"))},
        {"ST-8", "header is not JSON", st_open(st_raw("{\"w\": {\"dtype\""))},
        {"ST-9", "header is a JSON list", st_open(st_raw("[1, 2, 3]"))},
        {"ST-10", "tensor named twice in the header",
         st_open(st_raw(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, )"
                        R"("w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                        std::string(8, '\0')))},
        {"ST-11", "__metadata__ is a number", st_header({{"__metadata__", 5}})},
        {"ST-12", "__metadata__ value is a number", st_header({{"__metadata__", {{"format", 1}}}})},
        {"ST-13", "tensor entry is a number", st_header({{"w", 5}})},
        {"ST-14", "tensor entry without data_offsets", st_header({{"w", {{"dtype", "F32"}, {"shape", {4}}}}})},
        {"ST-15", "dtype is a number", st_header({{"w", st_entry_with("dtype", 7)}})},
        {"ST-16", "dtype I64", st_header({{"w", st_entry({2}, 0, 16, "I64")}})},
        {"ST-17", "shape is a string", st_header({{"w", st_entry_with("shape", "4")}})},
        {"ST-18", "dimension 2^64-1", st_header({{"w", st_entry({UINT64_MAX}, 0, 16)}})},
        {"ST-19", "dimension 1.5", st_header({{"w", st_entry({1.5}, 0, 16)}})},
        {"ST-20", "dimension -4", st_header({{"w", st_entry({-4}, 0, 16)}})},
        {"ST-21", "shape [2^32, 2^32] (element count overflows)",
         st_header({{"w", st_entry({uint64_t(1) << 32, uint64_t(1) << 32}, 0, 16)}})},
        {"ST-22", "shape [2^62] of F32 (byte size overflows)", st_header({{"w", st_entry({uint64_t(1) << 62}, 0, 16)}})},
        {"ST-23", "data_offsets [0]", st_header({{"w", st_entry_with("data_offsets", {0})}})},
        {"ST-24", "data_offsets [16, 0]", st_header({{"w", st_entry({0}, 16, 0)}})},
        {"ST-25", "2^40-element tensor claiming 16 bytes (must fail before allocating)",
         st_header({{"w", st_entry({t40}, 0, 16)}})},
        {"ST-25", "tiny ViT, pos_embed header claims [1, 2^40] (vit_load)",
         vit_broken([=] { return vit_lying_header([=](json& h) { h["pos_embed"]["shape"] = {1, t40}; }); })},
        {"ST-26", "2^40-element tensor with matching offsets in a 16-byte data section",
         st_header({{"w", st_entry({t40}, 0, t40 * 4)}})},
        {"ST-26", "tiny ViT weights cut to half their size",
         vit_broken([] {
             const std::string dir = vit_folder();
             fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
             return dir;
         })},
        {"ST-27", "two tensors sharing bytes 4..8", st_header({{"a", st_entry({2}, 0, 8)}, {"b", st_entry({2}, 4, 12)}})},
        {"ST-28", "tiny ViT without norm.weight", vit_tensors([](auto& t) { drop_tensors(t, "norm.weight"); })},
        {"ST-29", "tiny ViT pos_embed [1, 10, 32] instead of [1, 17, 32]",
         vit_tensors([](auto& t) {
             for (NamedTensor& x : t)
                 if (x.name == "pos_embed") x = {x.name, {1, 10, 32}, std::vector<float>(320)};
         })},
        {"ST-30", "tensor 'a' in two shards",
         st_sharded({{"weight_map", {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}}},
                    {{"s1.safetensors", {"a"}}, {"s2.safetensors", {"a", "b"}}})},
        {"ST-31", "LLaVA folder without weights", llava_broken(remove_weights)},
        {"ST-32", "index with an empty weight_map", st_sharded({{"weight_map", json::object()}}, {})},
        {"ST-33", "index maps a tensor to a number", st_sharded({{"weight_map", {{"a", 5}}}}, {})},
        {"ST-34", "index maps a tensor to ../x.safetensors", st_sharded({{"weight_map", {{"a", "../x.safetensors"}}}}, {})},
        {"ST-35", "index names a 300-character shard", st_sharded({{"weight_map", {{"a", std::string(300, 'x')}}}}, {})},
        {"ST-36", "index names a shard that is not there",
         st_sharded({{"weight_map", {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}}}}, {})},
        {"ST-36", "LLaVA fixture with shard 2 of 3 deleted",
         llava_broken([](const std::string& d) { fs::remove(d + "/model-00002-of-00003.safetensors"); })},
        {"ST-37", "index puts 'b' in a shard that only holds 'a'",
         st_sharded({{"weight_map", {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}}}}, {{"s1.safetensors", {"a"}}})},
        {"ST-38", "shard holds 'c', which the index does not list",
         st_sharded({{"weight_map", {{"a", "s1.safetensors"}}}}, {{"s1.safetensors", {"a", "c"}}})},
        {"ST-39", "LLaVA config asks for attention biases the weights lack",
         llava_text([](json& t) { t["attention_bias"] = true; })},
        {"ST-40", "LLaVA intermediate_size 161 for 160-row weights", llava_text([](json& t) { t["intermediate_size"] = 161; })},
        {"ST-41", "tiny ViT config depth 2 for 3 blocks of weights", vit_args([](json& a) { a["depth"] = 2; })},
        {"ST-41", "LLaVA config with 2 decoder layers for 3 layers of weights",
         llava_text([](json& t) { t["num_hidden_layers"] = 2; })},
        {"ST-42", "LLaVA folder whose weights hold one unrelated tensor",
         llava_broken([](const std::string& d) {
             remove_weights(d);
             write_file(d + "/model.safetensors", test::safetensors_bytes({{"foo", {2}, {1.0f, 2.0f}}}));
         })},
        {"ST-43", "LLaVA weights without the LM head, tie_word_embeddings false",
         llava_broken([](const std::string& d) {
             single_file_without(d, [](const std::string& n) { return n.find("lm_head") != std::string::npos; });
         })},
    };
}

std::vector<Trigger> config_triggers() {
    auto vit_file = [](std::function<void(const std::string&)> breakit) {
        return vit_broken([breakit] {
            const std::string dir = vit_folder();
            breakit(dir + "/config.json");
            return dir;
        });
    };
    return {
        {"CF-1", "timm folder without config.json", vit_file([](const std::string& f) { fs::remove(f); })},
        {"CF-2", "config.json cut after 10 bytes", vit_file([](const std::string& f) { fs::resize_file(f, 10); })},
        {"CF-3", "config.json is a JSON list", vit_file([](const std::string& f) { write_file(f, "[1, 2]"); })},
        {"CF-3", "generation_config.json is a string",
         llava_broken([](const std::string& d) { write_file(d + "/generation_config.json", "\"eos\""); })},
        {"CF-4", "num_classes \"ten\"", vit_config([](json& c) { c["num_classes"] = "ten"; })},
        {"CF-4", "num_classes 2^40", vit_config([](json& c) { c["num_classes"] = uint64_t(1) << 40; })},
        {"CF-5", "model_args.mlp_ratio \"four\"", vit_args([](json& a) { a["mlp_ratio"] = "four"; })},
        {"CF-6", "model_args.qkv_bias \"yes\"", vit_args([](json& a) { a["qkv_bias"] = "yes"; })},
        {"CF-7", "architecture 5", vit_config([](json& c) { c["architecture"] = 5; })},
        {"CF-8", "pretrained_cfg.mean of 2 numbers", vit_pretrained([](json& p) { p["mean"] = {0.5, 0.5}; })},
        {"CF-9", "pretrained_cfg.std with a 0", vit_pretrained([](json& p) { p["std"] = {0.5, 0, 0.5}; })},
        {"CF-10", "input_size [3, 32]", vit_pretrained([](json& p) { p["input_size"] = {3, 32}; })},
        {"CF-11", "input_size [1, 32, 32]", vit_pretrained([](json& p) { p["input_size"] = {1, 32, 32}; })},
        {"CF-12", "input_size [3, 0, 32]", vit_pretrained([](json& p) { p["input_size"] = {3, 0, 32}; })},
        {"CF-12", "input_size [3, 100000, 100000]", vit_pretrained([](json& p) { p["input_size"] = {3, 100000, 100000}; })},
        {"CF-13", "crop_pct 5", vit_pretrained([](json& p) { p["crop_pct"] = 5; })},
        {"CF-14", "crop_mode \"zoom\"", vit_pretrained([](json& p) { p["crop_mode"] = "zoom"; })},
        {"CF-15", "interpolation \"lanczos\"", vit_pretrained([](json& p) { p["interpolation"] = "lanczos"; })},
        {"CF-16", "no architecture key", vit_config([](json& c) { c.erase("architecture"); })},
        {"CF-17", "num_classes -1", vit_config([](json& c) { c["num_classes"] = -1; })},
        {"CF-18", "model_args 5", vit_config([](json& c) { c["model_args"] = 5; })},
        {"CF-19", "pretrained_cfg \"x\"", vit_config([](json& c) { c["pretrained_cfg"] = "x"; })},
        {"CF-20", "pretrained_cfg.num_classes 11, num_classes 10", vit_pretrained([](json& p) { p["num_classes"] = 11; })},
        {"CF-21", "architecture deit_tiny_distilled_patch16_224",
         vit_config([](json& c) { c["architecture"] = "deit_tiny_distilled_patch16_224"; })},
        {"CF-22", "architecture vit_gigantic_patch16_224, no model_args",
         vit_config([](json& c) { c.erase("model_args"), c["architecture"] = "vit_gigantic_patch16_224"; })},
        {"CF-23", "architecture resnet50, no model_args",
         vit_config([](json& c) { c.erase("model_args"), c["architecture"] = "resnet50"; })},
        {"CF-24", "act_layer relu", vit_args([](json& a) { a["act_layer"] = "relu"; })},
        {"CF-25", "patch_size 100", vit_args([](json& a) { a["patch_size"] = 100; })},
        {"CF-26", "img_size 30 with patch 8", vit_args([](json& a) { a["img_size"] = 30; })},
        {"CF-26", "img_size [8192, 8192]", vit_args([](json& a) { a["img_size"] = {8192, 8192}; })},
        {"CF-27", "embed_dim 20000", vit_args([](json& a) { a["embed_dim"] = 20000; })},
        {"CF-28", "depth 0", vit_args([](json& a) { a["depth"] = 0; })},
        {"CF-29", "num_heads 5 for embed_dim 32", vit_args([](json& a) { a["num_heads"] = 5; })},
        {"CF-30", "mlp_ratio 0", vit_args([](json& a) { a["mlp_ratio"] = 0; })},
        {"CF-31", "norm_eps 0", vit_args([](json& a) { a["norm_eps"] = 0; })},
        {"CF-32", "global_pool max", vit_config([](json& c) { c["global_pool"] = "max"; })},
        {"CF-33", "class_token false with global_pool token", vit_args([](json& a) { a["class_token"] = false; })},
        {"CF-34", "block_attention with 0 entries for 3 blocks", vit_blocks(json::array())},
        {"CF-35", "block_attention [1, 2, 3]", vit_blocks({1, 2, 3})},
        {"CF-36", "global block with a window setting", vit_blocks(first_block({{"kind", "global"}, {"window", 2}}))},
        {"CF-37", "routing scale \"pixel\"",
         vit_blocks(first_block({{"kind", "routing"}, {"regions", 2}, {"topk", 1}, {"scale", "pixel"}}))},
        {"CF-38", "routing regions 9 on a 4x4 grid", vit_blocks(first_block({{"kind", "routing"}, {"regions", 9}}))},
        {"CF-39", "routing regions 2, topk 5", vit_blocks(first_block({{"kind", "routing"}, {"regions", 2}, {"topk", 5}}))},
        {"CF-40", "routing lce_kernel 4",
         vit_blocks(first_block({{"kind", "routing"}, {"regions", 2}, {"topk", 1}, {"lce_kernel", 4}}))},
        {"CF-41", "window 3 on a 4x4 grid", vit_blocks(first_block({{"kind", "window"}, {"window", 3}}))},
        {"CF-42", "channel groups 5 for embed_dim 32", vit_blocks(first_block({{"kind", "channel"}, {"groups", 5}}))},
        {"CF-43", "attention kind \"sparse\"", vit_blocks(first_block({{"kind", "sparse"}}))},
        {"CF-44", "input_size 64x64 for img_size 32", vit_pretrained([](json& p) { p["input_size"] = {3, 64, 64}; })},
        {"CF-45", "LLaVA folder without config.json", llava_broken([](const std::string& d) { fs::remove(d + "/config.json"); })},
        {"CF-46", "vision_config \"big\"", llava_config([](json& c) { c["vision_config"] = "big"; })},
        {"CF-47", "vision hidden_size 0", llava_vision([](json& v) { v["hidden_size"] = 0; })},
        {"CF-47", "text vocab_size 2^30", llava_text([](json& t) { t["vocab_size"] = 1 << 30; })},
        {"CF-48", "vision model_type siglip_vision_model", llava_vision([](json& v) { v["model_type"] = "siglip_vision_model"; })},
        {"CF-49", "vision hidden_act relu", llava_vision([](json& v) { v["hidden_act"] = "relu"; })},
        {"CF-50", "vision num_channels 1", llava_vision([](json& v) { v["num_channels"] = 1; })},
        {"CF-51", "vision heads 5 for hidden 64", llava_vision([](json& v) { v["num_attention_heads"] = 5; })},
        {"CF-52", "vision image_size 50, patch 14", llava_vision([](json& v) { v["image_size"] = 50; })},
        {"CF-53", "vision layer_norm_eps 0", llava_vision([](json& v) { v["layer_norm_eps"] = 0; })},
        {"CF-54", "rope_parameters \"linear\"", llava_text([](json& t) { t["rope_parameters"] = "linear"; })},
        {"CF-55", "rope_type yarn", llava_text([](json& t) { t["rope_parameters"]["rope_type"] = "yarn"; })},
        {"CF-55", "4.x rope_scaling type dynamic",
         llava_json("config.json", [](json& c) { c["text_config"]["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}}; },
                    "tiny-llava-mha")},
        {"CF-56", "linear rope factor 0", llava_text([](json& t) { t["rope_parameters"]["factor"] = 0; })},
        {"CF-57", "llama3 rope with low_freq_factor 4 > high_freq_factor 1",
         llava_text([](json& t) {
             t["rope_parameters"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0},
                                     {"high_freq_factor", 1.0}, {"original_max_position_embeddings", 8192}};
         })},
        {"CF-58", "rope_theta 0", llava_text([](json& t) { t["rope_parameters"]["rope_theta"] = 0; })},
        {"CF-59", "text model_type gpt2", llava_text([](json& t) { t["model_type"] = "gpt2"; })},
        {"CF-60", "text hidden_act gelu", llava_text([](json& t) { t["hidden_act"] = "gelu"; })},
        {"CF-61", "3 KV heads for 4 heads", llava_text([](json& t) { t["num_key_value_heads"] = 3; })},
        {"CF-62", "head_dim 15", llava_text([](json& t) { t["head_dim"] = 15; })},
        {"CF-63", "rms_norm_eps 0", llava_text([](json& t) { t["rms_norm_eps"] = 0; })},
        {"CF-64", "pretraining_tp 2", llava_text([](json& t) { t["pretraining_tp"] = 2; })},
        {"CF-65", "model_type vit", llava_config([](json& c) { c["model_type"] = "vit"; })},
        {"CF-66", "image_token_index -1", llava_config([](json& c) { c["image_token_index"] = -1; })},
        {"CF-67", "vision_feature_layer [-2, \"x\"]", llava_config([](json& c) { c["vision_feature_layer"] = {-2, "x"}; })},
        {"CF-68", "vision_feature_layer \"last\"", llava_config([](json& c) { c["vision_feature_layer"] = "last"; })},
        {"CF-69", "vision_feature_layer []", llava_config([](json& c) { c["vision_feature_layer"] = json::array(); })},
        {"CF-70", "vision_feature_layer -9 for 4 layers", llava_config([](json& c) { c["vision_feature_layer"] = -9; })},
        {"CF-71", "vision_feature_select_strategy cls",
         llava_config([](json& c) { c["vision_feature_select_strategy"] = "cls"; })},
        {"CF-72", "projector_hidden_act relu", llava_config([](json& c) { c["projector_hidden_act"] = "relu"; })},
        {"CF-73", "generation_config eos_token_id \"eos\"",
         llava_json("generation_config.json", [](json& g) { g["eos_token_id"] = "eos"; })},
        {"CF-74", "vision_feature_layer [-2, -1]", llava_config([](json& c) { c["vision_feature_layer"] = {-2, -1}; })},
        {"CF-75", "image_mean of 2 numbers", llava_processor([](json& p) { p["image_mean"] = {0.5, 0.5}; })},
        {"CF-76", "image_std 0", llava_processor([](json& p) { p["image_std"] = 0; })},
        {"CF-77", "resample 1 (PIL LANCZOS)", llava_processor([](json& p) { p["resample"] = 1; })},
        {"CF-78", "no preprocessor_config.json or processor_config.json",
         llava_broken([](const std::string& d) { fs::remove(d + "/processor_config.json"); })},
        {"CF-79", "processor_config.json without image_processor",
         llava_json("processor_config.json", [](json& j) { j.erase("image_processor"); })},
        {"CF-80", "SiglipImageProcessor", llava_processor([](json& p) { p["image_processor_type"] = "SiglipImageProcessor"; })},
        {"CF-81", "do_pad true", llava_processor([](json& p) { p["do_pad"] = true; })},
        {"CF-82", "size \"big\"", llava_processor([](json& p) { p["size"] = "big"; })},
        {"CF-83", "crop_size \"big\"", llava_processor([](json& p) { p["crop_size"] = "big"; })},
        {"CF-84", "shortest_edge 0", llava_processor([](json& p) { p["size"] = {{"shortest_edge", 0}}; })},
        {"CF-85", "crop height 0", llava_processor([](json& p) { p["crop_size"] = {{"height", 0}, {"width", 56}}; })},
        {"CF-86", "crop 48x48 for image_size 56",
         llava_processor([](json& p) { p["crop_size"] = {{"height", 48}, {"width", 48}}; })},
    };
}

std::vector<Trigger> image_triggers() {
    // A Huffman table claiming 16 x 20 = 320 codes (stb_image's tables hold 256).
    const std::string dht = "\xFF\xC4" + std::string("\x00\x14\x00", 3) + std::string(16, '\x14');
    return {
        {"IM-1", "image file missing", call([] { image_decode_file(temp_dir() + "/none.png"); })},
        {"IM-2", "image path is a folder", call([] { image_decode_file(temp_dir()); })},
        {"IM-4", "empty file", image("")},
        {"IM-5", "a GIF", image("GIF89a\x01\x00\x01\x00", "anim.gif")},
        {"IM-5", "a text file named .jpg", image("just some text\n", "notes.jpg")},
        {"IM-6", "PNG signature only", image("\x89PNG\r\n\x1a\n")},
        {"IM-7", "PNG header claiming 0x10 pixels", image(png_header_only(0, 10))},
        {"IM-8", "JPEG Huffman table with 320 codes", image(jpeg_frame(16, 16) + dht + jpeg_end, "dht.jpg")},
        {"IM-9", "real JPEG cut in half",
         image_bytes([] { return scene_jpeg().substr(0, scene_jpeg().size() / 2); }, "half.jpg")},
        {"IM-10", "BMP header claiming 100x100, no pixel rows", image(bmp_header_only(100, 100), "short.bmp")},
        {"IM-12", "JPEG frame header and end marker, no scan", image(jpeg_frame(16, 16) + jpeg_end, "empty-scan.jpg")},
        {"IM-12", "real JPEG whose frame header says 12-bit samples",
         image_bytes(
             [] {
                 std::string jpeg = scene_jpeg();
                 jpeg[jpeg.find("\xFF\xC0") + 4] = 12;
                 return jpeg;
             },
             "12bit.jpg")},
        {"IM-13", "real PNG cut in half",
         image_bytes([] {
             const std::string png = test::read_file(png_file(temp_dir(), 64, 48));
             return png.substr(0, png.size() / 2);
         })},
        {"IM-15", "writing a PNG into a missing folder", call([] { image_write_png(temp_dir() + "/no/dir/x.png", gradient(4, 4)); })},
        {"IM-16", "writing a PNG to /dev/full", call([] { image_write_png("/dev/full", gradient(4, 4)); })},
        {"IM-17", "empty image to preprocessing", geometry(Image{}, [](PreprocessConfig&) {})},
        {"IM-18", "model input size 0x224", geometry(gradient(8, 8), [](PreprocessConfig& c) { c.input_height = 0; })},
        {"IM-19", "crop mode zoom", geometry(gradient(8, 8), [](PreprocessConfig& c) { c.crop_mode = "zoom"; })},
        {"IM-20", "crop_pct 0", geometry(gradient(8, 8), [](PreprocessConfig& c) { c.crop_pct = 0; })},
        {"IM-21", "1x1 input with crop_pct 2",
         geometry(gradient(8, 8), [](PreprocessConfig& c) { c.input_height = c.input_width = 1, c.crop_pct = 2; })},
        {"IM-22", "std 0",
         call([] {
             PreprocessConfig cfg;
             cfg.std[1] = 0;
             std::vector<float> out(size_t(3 * 224 * 224));
             preprocess_image(gradient(8, 8), cfg, out.data());
         })},
        {"IM-23", "empty image to the resizer", call([] { image_resize_pillow(Image{}, 4, 4, Resample::bicubic); })},
        {"IM-24", "1x2000 image, border crop mode", geometry(gradient(1, 2000), [](PreprocessConfig& c) { c.crop_mode = "border"; })},
    };
}

std::vector<Trigger> label_triggers() {
    return {
        {"LB-1", "class-name file missing", call([] { class_names_read(temp_dir() + "/none.tsv"); })},
        {"LB-2", "class-name row 'x<TAB>one' after row 0", class_names("0\tzero\nx\tone\n")},
        {"LB-3", "class indices 0, 2", class_names("0\tzero\n2\ttwo\n")},
        {"LB-4", "empty class-name file", class_names("\n\n")},
        {"LB-5", "label row without a tab", labels("a.png\n")},
        {"LB-6", "label class 'cat'", labels("image\tclass\na.png\tcat\n")},
        {"LB-7", "label class 12 of 10", labels("a.png\t12\n")},
        {"LB-7", "label class -1", labels("a.png\t-1\n")},
        {"LB-8", "image name ../a.png", labels("../a.png\t1\n")},
        {"LB-8", "image name /etc/passwd", labels("/etc/passwd\t1\n")},
        {"LB-9", "label file with a header only", labels("image\tclass\n")},
    };
}

std::vector<Trigger> tokenizer_triggers() {
    const json s_then_a = {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}};
    json unk = bpe_tokenizer();
    unk["model"]["unk_token"] = "<unk>";
    // tokenizer.model protobufs: one piece "a", a TrainerSpec with model_type 1
    // (Unigram) or 2 (BPE), a NormalizerSpec with a precompiled charsmap.
    const std::string piece = std::string("\x0A\x03\x0A\x01", 4) + "a", unigram = std::string("\x12\x02\x18\x01", 4);
    const std::string bpe = std::string("\x12\x02\x18\x02", 4), charsmap = std::string("\x1A\x03\x12\x01", 4) + "x";
    return {
        {"TK-1", "model folder missing", call([] { Tokenizer::load(temp_dir() + "/none"); })},
        {"TK-2", "folder without tokenizer files", call([] { Tokenizer::load(temp_dir()); })},
        {"TK-3", "tokenizer_config bos_token 5", tokenizer_file("tokenizer_config.json", R"({"bos_token": 5})")},
        {"TK-4", "additional_special_tokens \"x\"", tokenizer_file("tokenizer_config.json", R"({"additional_special_tokens": "x"})")},
        {"TK-5", "added_tokens_decoder []", tokenizer_file("tokenizer_config.json", R"({"added_tokens_decoder": []})")},
        {"TK-6", "added_tokens_decoder key \"x\"", tokenizer_file("tokenizer_config.json", R"({"added_tokens_decoder": {"x": "<s>"}})")},
        {"TK-7", "added_tokens.json id \"x\"", tokenizer_file("added_tokens.json", R"({"<image>": "x"})")},
        {"TK-8", "BPE model without merges", tokenizer_model([](json& m) { m.erase("merges"); })},
        {"TK-9", "model type 5", tokenizer_model([](json& m) { m["type"] = 5; })},
        {"TK-10", "byte_fallback \"yes\"", tokenizer_model([](json& m) { m["byte_fallback"] = "yes"; })},
        {"TK-11", "Metaspace replacement \"ab\"", tokenizer_pre({{"type", "Metaspace"}, {"replacement", "ab"}})},
        {"TK-12", "normalizer 5", tokenizer_edit([](json& j) { j["normalizer"] = 5; })},
        {"TK-13", "normalizer BertNormalizer", tokenizer_edit([](json& j) { j["normalizer"] = {{"type", "BertNormalizer"}}; })},
        {"TK-13", "decoder WordPiece", tokenizer_edit([](json& j) { j["decoder"] = {{"type", "WordPiece"}}; })},
        {"TK-14", "Split regex \"(\"", tokenizer_pre({{"type", "Split"}, {"pattern", {{"Regex", "("}}}, {"behavior", "Isolated"}})},
        {"TK-15", "Split pattern {\"Glob\": \"*\"}",
         tokenizer_pre({{"type", "Split"}, {"pattern", {{"Glob", "*"}}}, {"behavior", "Isolated"}})},
        {"TK-16", "Split behavior Sideways",
         tokenizer_pre({{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}})},
        {"TK-17", "normalizer Sequence of 5", tokenizer_edit([](json& j) { j["normalizer"] = {{"type", "Sequence"}, {"normalizers", 5}}; })},
        {"TK-18", "Metaspace prepend_scheme sometimes",
         tokenizer_pre({{"type", "Metaspace"}, {"replacement", "_"}, {"prepend_scheme", "sometimes"}})},
        {"TK-19", "BPE dropout 0.1", tokenizer_model([](json& m) { m["dropout"] = 0.1; })},
        {"TK-20", "vocab is a list", tokenizer_model([](json& m) { m["vocab"] = {"a", "b"}; })},
        {"TK-21", "vocab id -1", tokenizer_model([](json& m) { m["vocab"]["a"] = -1; })},
        {"TK-22", "merges is a string", tokenizer_model([](json& m) { m["merges"] = "a b"; })},
        {"TK-23", "merge \"ab\" without a space", tokenizer_model([](json& m) { m["merges"] = {"ab"}; })},
        {"TK-24", "merge 5", tokenizer_model([](json& m) { m["merges"] = {5}; })},
        {"TK-25", "merge \"a c\" with c not in the vocabulary", tokenizer_model([](json& m) { m["merges"] = {"a c"}; })},
        {"TK-26", "tokenizer.json without model", tokenizer_edit([](json& j) { j.erase("model"); })},
        {"TK-27", "WordPiece model", tokenizer_model([](json& m) { m["type"] = "WordPiece"; })},
        {"TK-28", "added token id -1", tokenizer_edit([](json& j) { j["added_tokens"] = {{{"id", -1}, {"content", "x"}}}; })},
        {"TK-29", "template single 5", template_processing(5, json::object())},
        {"TK-30", "template sequence $B", template_processing({{{"Sequence", {{"id", "B"}}}}}, json::object())},
        {"TK-31", "template names <s>, special_tokens empty", template_processing(s_then_a, json::object())},
        {"TK-32", "template special token ids 5", template_processing(s_then_a, {{"<s>", {{"ids", 5}}}})},
        {"TK-33", "template special token id -1", template_processing(s_then_a, {{"<s>", {{"ids", {-1}}}}})},
        {"TK-34", "template piece 5", template_processing({5}, json::object())},
        {"TK-35", "template without $A", template_processing({{{"SpecialToken", {{"id", "<s>"}}}}}, {{"<s>", {{"ids", {0}}}}})},
        {"TK-36", "BertProcessing cls \"x\"",
         tokenizer_edit([](json& j) { j["post_processor"] = {{"type", "BertProcessing"}, {"cls", "x"}, {"sep", {"[SEP]", 1}}}; })},
        {"TK-37", "unk_token <unk> missing from the vocabulary, text 'z'", encode(unk, "z")},
        {"TK-38", "text with the invalid UTF-8 bytes C3 28", encode(bpe_tokenizer(), "bad \xC3(")},
        {"TK-41", "tokenizer.model is text", sentencepiece("not a sentencepiece model", false)},
        {"TK-42", "tokenizer.model with a length past its end (transformers 5)", sentencepiece(std::string("\x0A\x05", 2) + "a", true)},
        {"TK-43", "empty tokenizer.model (transformers 5)", sentencepiece("", true)},
        {"TK-44", "Unigram tokenizer.model (transformers 5)", sentencepiece(piece + unigram, true)},
        {"TK-45", "BPE tokenizer.model with a precompiled charsmap (transformers 5)", sentencepiece(piece + bpe + charsmap, true)},
        {"TK-48", "LLaVA tokenizer with one added token more than the 639-token vocabulary",
         llava_json("tokenizer_config.json",
                    [](json& j) { j["added_tokens_decoder"] = {{"700", {{"content", "<extra>"}, {"special", true}}}}; })},
        {"TK-49", "image_token_index 5 while the tokenizer's <image> is 638",
         llava_config([](json& c) { c["image_token_index"] = 5; })},
    };
}

std::vector<Trigger> pipeline_triggers() {
    std::string many_stages = "stages:\n";
    for (int i = 0; i < 65; ++i) many_stages += "  - noop\n";
    return {
        {"PL-1", "pipeline file missing", call([] { pipeline_read(temp_dir() + "/none.yaml"); })},
        {"PL-2", "unclosed { in YAML", pipeline("stages:\n  - noop: {\nbatch: 1\n")},
        {"PL-3", "document is a list", pipeline("- noop\n- noop\n")},
        {"PL-4", "stage settings 5", stage("evit: 5")},
        {"PL-5", "keep_rate lots", stage("evit: {keep_rate: lots}")},
        {"PL-5", "keep_rate .nan", stage("evit: {keep_rate: .nan}")},
        {"PL-6", "batch many", pipeline("batch: many\n")},
        {"PL-7", "threads -3", pipeline("threads: -3\n")},
        {"PL-7", "batch 100000", pipeline("batch: 100000\n")},
        {"PL-8", "fuse maybe", stage("evit: {fuse: maybe}")},
        {"PL-9", "model [a, b]", pipeline("model: [a, b]\n")},
        {"PL-10", "blocks 3", stage("evit: {blocks: 3}")},
        {"PL-11", "blocks [1, x]", stage("evit: {blocks: [1, x]}")},
        {"PL-12", "blocks [1, 300]", stage("evit: {blocks: [1, 300]}")},
        {"PL-13", "a list as a key", pipeline("? [a, b]\n: 1\n")},
        {"PL-14", "key threds", pipeline("stages: []\nthreds: 2\n")},
        {"PL-15", "model ${HOME", pipeline("model: ${HOME\n")},
        {"PL-16", "model name that exists nowhere", call([] { model_resolve("no-such-model-anywhere"); })},
        {"PL-17", "stages is a mapping", pipeline("stages: {noop: {}}\n")},
        {"PL-18", "65 stages", pipeline(many_stages)},
        {"PL-19", "a stage entry with two names", pipeline("stages:\n  - {noop: {}, evit: {}}\n")},
        {"PL-20", "run file with pipeline and stages",
         call([] { run_config_read(yaml_file("pipeline: " + yaml_file("stages: []\n") + "\nstages: []\nmodel: m\n", "run.yaml")); })},
        {"PL-21", "stage magic", stage("magic")},
        {"PL-22", "fastv on an image classifier", stage("fastv: {}")},
        {"PL-23", "vtc_cls and fastervlm together", stage_chain("  - vtc_cls: {keep: 4}\n  - fastervlm: {keep: 4}\n")},
        {"PL-24", "evit blocks []", stage("evit: {blocks: []}")},
        {"PL-24", "tome blocks []", stage("tome: {r: 1, blocks: []}")},
        {"PL-25", "evit blocks [2, 1]", stage("evit: {blocks: [2, 1]}")},
        {"PL-26", "keep_rate 1.5", stage("evit: {keep_rate: 1.5}")},
        {"PL-27", "order random", stage("evit: {order: random}")},
        {"PL-28", "evit order score in a LLaVA chain", stage("evit: {blocks: [1], order: score}", true)},
        {"PL-29", "evit block 5 of 3", stage("evit: {blocks: [5]}")},
        {"PL-30", "evit on an encoder without CLS", stage_chain("  - evit: {blocks: [1]}\n", false, vit_shape(0))},
        {"PL-31", "tome r and schedule", stage("tome: {r: 2, schedule: [1, 1, 1]}")},
        {"PL-32", "tome {}", stage("tome: {}")},
        {"PL-33", "tome schedule []", stage("tome: {schedule: []}")},
        {"PL-34", "tome schedule and blocks", stage("tome: {schedule: [1, 1, 1], blocks: [1]}")},
        {"PL-35", "tome blocks [1, 1]", stage("tome: {r: 1, blocks: [1, 1]}")},
        {"PL-35", "window_attention blocks [1, 1]", stage("window_attention: {blocks: [1, 1], window: 2}")},
        {"PL-36", "tome on an encoder with 2 prefix tokens", stage_chain("  - tome: {r: 1}\n", false, vit_shape(2))},
        {"PL-37", "tome schedule of 2 for depth 3", stage("tome: {schedule: [1, 1]}")},
        {"PL-38", "tome block 7 of 3", stage("tome: {r: 1, blocks: [7]}")},
        {"PL-39", "tome schedule [1, 20, 1] on 17 tokens", stage("tome: {schedule: [1, 20, 1]}")},
        {"PL-40", "tome r 9 on 17 tokens", stage("tome: {r: 9}")},
        {"PL-41", "biformer_routing blocks []", stage("biformer_routing: {blocks: []}")},
        {"PL-42", "biformer_routing regions 2 topk 5", stage("biformer_routing: {regions: 2, topk: 5}")},
        {"PL-43", "biformer_routing scale pixel", stage("biformer_routing: {regions: 2, topk: 1, scale: pixel}")},
        {"PL-44", "biformer_routing block 5 of 3", stage("biformer_routing: {blocks: [5], regions: 2, topk: 1}")},
        {"PL-45", "biformer_routing regions 7 on a 4x4 grid", stage("biformer_routing: {regions: 7, topk: 1}")},
        {"PL-46", "window_attention blocks []", stage("window_attention: {blocks: []}")},
        {"PL-47", "window_attention window 3 on a 4x4 grid", stage("window_attention: {window: 3}")},
        {"PL-48", "vtc_cls positions shuffled", stage("vtc_cls: {positions: shuffled}")},
        {"PL-49", "vtc_cls on an encoder without CLS", stage_chain("  - vtc_cls: {}\n", false, vit_shape(0))},
        {"PL-50", "vtc_cls start_layer 5 of 3", stage("vtc_cls: {start_layer: 5, keep: 4}")},
        {"PL-51", "fastervlm keep 100 of 16 patches", stage("fastervlm: {keep: 100}")},
        {"PL-52", "damro alpha -1", stage("damro: {alpha: -1}", true)},
        {"PL-53", "damro beta 0", stage("damro: {beta: 0}", true)},
        {"PL-54", "damro on an encoder without CLS", stage_chain("  - damro: {k: 4}\n", true, vit_shape(0))},
        {"PL-55", "damro k 100 of 16 patches", stage("damro: {k: 100}", true)},
        {"PL-56", "dyvte exit_layer and router", stage("dyvte: {exit_layer: 1, router: r.safetensors}", true)},
        {"PL-57", "dyvte exit_layer 5 of 3 layers", stage("dyvte: {exit_layer: 5}", true)},
        {"PL-58", "dyvte without its router file", stage("dyvte: {}", true)},
        {"PL-59", "dyvte router holding w1 only",
         stage_chain("  - dyvte: {}\n", true, vit_shape(), router({{"w1", {2, 128}, std::vector<float>(256)}}))},
        {"ST-29", "dyvte router w1 [8, 100] for a 64-wide decoder (needs [8, 128])",
         stage_chain("  - dyvte: {}\n", true, vit_shape(),
                     router({{"w1", {8, 100}, std::vector<float>(800)}, {"w2", {2, 8}, std::vector<float>(16)}}))},
        {"PL-60", "fastv ratio 1", stage("fastv: {ratio: 1}", true)},
        {"PL-61", "fastv layer 5 of 3", stage("fastv: {layer: 5}", true)},
        {"PL-62", "var tau 0", stage("var: {tau: 0, sink_dims: [1]}", true)},
        {"PL-63", "var rho 2", stage("var: {rho: 2, sink_dims: [1]}", true)},
        {"PL-64", "var p -1", stage("var: {p: -1, sink_dims: [1]}", true)},
        {"PL-65", "var min_image_attention 2", stage("var: {min_image_attention: 2, sink_dims: [1]}", true)},
        {"PL-66", "var first_layer 5 of 3", stage("var: {first_layer: 5, sink_dims: [1]}", true)},
        {"PL-67", "var without sink_dims or var_sinks.json", stage("var: {first_layer: 0}", true)},
        {"PL-68", "var_sinks.json without dims", stage_chain("  - var: {first_layer: 0}\n", true, vit_shape(), sinks(R"({"tau": 20})"))},
        {"PL-69", "var_sinks.json dims [\"a\"]", stage_chain("  - var: {first_layer: 0}\n", true, vit_shape(), sinks(R"({"dims": ["a"]})"))},
        {"PL-70", "var sink_dims [100] for hidden 64", stage("var: {sink_dims: [100], first_layer: 0}", true)},
        {"PL-71", "evit at block 0 before a routing block",
         vit_forward({global_block(), {{"kind", "routing"}, {"regions", 2}, {"topk", 1}}, global_block()},
                     "  - evit: {blocks: [0], keep_rate: 0.5}\n")},
        {"PL-72", "evit asks for the CLS row of a channel block",
         vit_forward({global_block(), {{"kind", "channel"}, {"groups", 2}}, global_block()}, "  - evit: {blocks: [1]}\n")},
        {"PL-73", "window_attention on a block trained with window attention",
         vit_forward({global_block(), {{"kind", "window"}, {"window", 2}}, global_block()},
                     "  - window_attention: {blocks: [1], window: 2}\n")},
        {"PL-74", "tome after evit in the same block",
         vit_forward(nullptr, "  - evit: {blocks: [1], keep_rate: 0.5}\n  - tome: {r: 2, blocks: [1]}\n")},
        {"PL-75", "LLaVA: tome merges in the feature block before damro",
         caption({}, "  - tome: {r: 2, blocks: [2]}\n  - damro: {k: 2}\n")},
        {"PL-76", "LLaVA: damro's one outlier is not the token vtc_cls keeps",
         caption({}, "  - damro: {k: 1}\n  - vtc_cls: {start_layer: 0, keep: 1}\n")},
        {"PL-77", "tome and evit both change the tokens between two vtc_cls blocks",
         vit_forward(nullptr, "  - tome: {r: 1, blocks: [2]}\n  - evit: {blocks: [2], keep_rate: 0.5}\n"
                              "  - vtc_cls: {start_layer: 1, keep: 4}\n")},
        {"PL-78", "evit after vtc_cls at the last block",
         vit_forward(nullptr, "  - vtc_cls: {start_layer: 1, keep: 4}\n  - evit: {blocks: [2]}\n")},
        {"PL-79", "biformer_routing after evit pruned",
         vit_forward(nullptr, "  - evit: {blocks: [0], keep_rate: 0.5}\n  - biformer_routing: {blocks: [1], regions: 2, topk: 1}\n")},
        {"PL-82", "tome written as a bare name", stage("tome")},
        {"PL-83", "dtype f8", pipeline("dtype: f8\n")},
    };
}

std::vector<Trigger> run_triggers() {
    const std::string model = "model: m\n", dataset = "dataset: {images: i, labels: l}\n";
    std::string many_pipelines = model + dataset + "pipelines:\n";
    for (int i = 0; i < 33; ++i) many_pipelines += "  p" + std::to_string(i) + ": []\n";
    auto load_tiny_vit = [](VitModel& m, VitState& s) {
        vit_load(m, vit_folder());
        vit_state_init(s, m, 1);
    };
    return {
        {"RN-1", "run file without model", run_yaml(dataset)},
        {"RN-2", "run file without dataset", run_yaml(model)},
        {"RN-3", "dataset without images", run_yaml(model + "dataset: {labels: l}\n")},
        {"RN-4", "caption report without dataset", report_yaml(model + "task: caption\npipelines: {a: []}\n")},
        {"RN-5", "report task detect", report_yaml(model + "task: detect\npipelines: {a: []}\n")},
        {"RN-6", "report without pipelines", report_yaml(model + dataset)},
        {"RN-7", "pipelines []", report_yaml(model + dataset + "pipelines: []\n")},
        {"RN-8", "33 pipelines", report_yaml(many_pipelines)},
        {"RN-9", "pipeline given as a mapping", report_yaml(model + dataset + "pipelines:\n  a: {x: 1}\n")},
        {"RN-10", "baseline names no pipeline", report_yaml(model + dataset + "pipelines:\n  a: []\nbaseline: zzz\n")},
        {"RN-11", "tessera report, report.md is a folder",
         runner([](const RunFolder& r) { fs::create_directories(r.out + "/report.md"); }, true)},
        {"RN-12", "tessera report, pareto.png is a folder",
         runner([](const RunFolder& r) { fs::create_directories(r.out + "/pareto.png"); }, true)},
        {"RN-13", "tessera classify --visualize into a missing folder",
         cli_vit("classify --model MODEL --visualize /nonexistent/dir/v.png IMAGE")},
        {"RN-14", "tessera run, image folder missing", runner([](const RunFolder& r) { fs::remove_all(r.dir + "/images"); })},
        {"RN-15", "tessera run resumed, results.jsonl holds a non-JSON line",
         runner([](const RunFolder& r) {
             r.run();
             std::ofstream(r.out + "/results.jsonl", std::ios::app) << "garbage\n";
         })},
        {"RN-16", "tessera run, run.json is not JSON",
         runner([](const RunFolder& r) {
             fs::create_directories(r.out);
             write_file(r.out + "/run.json", "not json");
         })},
        {"RN-17", "tessera run resumed with another stage chain",
         runner([](const RunFolder& r) {
             r.run();
             std::ofstream(r.config, std::ios::app) << "stages: [noop]\n";
         })},
        {"RN-18", "tessera run, run.json.tmp is a folder",
         runner([](const RunFolder& r) { fs::create_directories(r.out + "/run.json.tmp"); })},
        {"RN-19", "tessera run, run.json.tmp links to /dev/full (disk full)",
         runner([](const RunFolder& r) {
             fs::create_directories(r.out);
             fs::create_symlink("/dev/full", r.out + "/run.json.tmp");
         })},
        {"RN-20", "caption report, requests file missing", caption_report(nullptr)},
        {"RN-20", "tessera caption --requests, file missing",
         [] { return cli("caption --model " + quoted(fixture()) + " --requests " + quoted(temp_dir() + "/none.jsonl")); }},
        {"RN-21", "request line is not JSON", caption_report("not json\n")},
        {"RN-22", "request without prompt", caption_report(R"({"image": "a.png", "task": "count"})" "\n")},
        {"RN-23", "caption request without objects", request(R"("task": "caption")")},
        {"RN-24", "caption request objects [1]", request(R"("task": "caption", "objects": [1])")},
        {"RN-25", "yesno answer maybe", request(R"("task": "yesno", "answer": "maybe")")},
        {"RN-26", "yesno answer no without negative", request(R"("task": "yesno", "answer": "no")")},
        {"RN-27", "count request without answer", request(R"("task": "count")")},
        {"RN-28", "request task vqa", request(R"("task": "vqa")")},
        {"RN-29", "empty request file", caption_report("\n\n")},
        {"RN-30", "vocabulary without objects", caption_report("{" + a_request + R"(, "task": "count", "answer": "2"})", R"({"words": []})")},
        {"RN-31", "vocabulary phrase \"\"", caption_report("{" + a_request + R"(, "task": "count", "answer": "2"})", R"({"objects": [""]})")},
        {"RN-32", "tessera caption --requests line without image",
         [] {
             const std::string f = write_file(temp_dir() + "/q.jsonl", "{\"prompt\": \"What?\"}\n");
             return cli("caption --model " + quoted(fixture()) + " --requests " + quoted(f));
         }},
        {"RN-33", "tessera caption --requests prompt 5",
         [] {
             const std::string dir = temp_dir();
             png_file(dir);
             const std::string f = write_file(dir + "/q.jsonl", "{\"image\": \"a.png\", \"prompt\": 5}\n");
             return cli("caption --model " + quoted(fixture()) + " --requests " + quoted(f));
         }},
        {"RN-34", "pipeline without model, no --model",
         call([] { Classifier clf({.model = "", .pipeline = yaml_file("stages: []\n"), .threads = 1, .max_batch = 1}); })},
        {"RN-35", "classify with num_classes 0",
         call([] {
             const std::string dir = vit_folder([](json& c) { c["num_classes"] = c["pretrained_cfg"]["num_classes"] = 0; },
                                                [](auto& t) { drop_tensors(t, "head."); });
             Classifier clf({.model = dir, .pipeline = "", .threads = 1, .max_batch = 1});
             std::vector<float> pixels(size_t(clf.input_floats()), 0.0f);
             clf.classify(pixels.data(), 1, 1);
         })},
        {"RN-36", "prompt \"<image> twice\"", caption(prompt("<image> twice"))},
        {"RN-36", "tessera caption --prompt with its own <image>",
         [] {
             const std::string img = png_file(temp_dir());
             return cli("caption --model " + quoted(fixture()) + " --prompt '<image> what is it' " + quoted(img));
         }},
        {"RN-37", "prompt of 4800 words for a 512-position model", caption(prompt(long_prompt()))},
        {"RN-38", "analyze sinks with a 4800-word prompt",
         call([] { analyze_sinks({.model = fixture(), .images = {png_file(temp_dir())}, .prompt = long_prompt()}); })},
        {"RN-39", "tessera analyze sinks --tau 0", cli_run("analyze sinks --tau 0 a.png")},
        {"RN-40", "analyze sinks --first-layer 10 of 3",
         call([] { analyze_sinks({.model = fixture(), .images = {png_file(temp_dir())}, .first_layer = 10}); })},
        {"RN-41", "analyze sinks without images", call([] { analyze_sinks({.model = fixture(), .images = {}}); })},
        {"RN-42", "generate with max_new_tokens 0", caption(prompt("What?", 0))},
        {"RN-43", "generate before encoding an image", caption({}, "", false)},
        {"RN-44", "prompt ids from a model loaded without its tokenizer",
         call([] { llava_prompt_ids(llava_model(), "x", 16); })},
        {"RN-45", "temperature -1", call([] { Sampler s({.temperature = -1.0f}, 10); })},
        {"RN-46", "top-k -1", call([] { Sampler s({.top_k = -1}, 10); })},
        {"RN-47", "top-p 0", call([] { Sampler s({.top_p = 0.0f}, 10); })},
        {"RN-48", "token id 99999",
         call([] {
             const int32_t id = 99999;
             std::vector<float> row(size_t(llava_model().cfg.text.hidden));
             llama_embed(llava_model().text, &id, 1, row.data());
         })},
        {"RN-49", "a 4-token step for a state sized for 2",
         call([] {
             const LlavaModel& m = llava_model();
             LlamaState st;
             llama_state_init(st, m.text, 8, 2);
             std::vector<float> x(size_t(4 * m.cfg.text.hidden));
             const std::vector<int32_t> pos = {0, 1, 2, 3};
             llama_forward(m.text, st, x.data(), pos.data(), 4, nullptr);
         })},
        {"RN-50", "a 5th token in a 4-token cache",
         call([] {
             const LlavaModel& m = llava_model();
             LlamaState st;
             llama_state_init(st, m.text, 4, 4);
             std::vector<float> x(size_t(4 * m.cfg.text.hidden), 0.01f);
             const std::vector<int32_t> pos = {0, 1, 2, 3, 4};
             llama_forward(m.text, st, x.data(), pos.data(), 4, nullptr);
             llama_forward(m.text, st, x.data(), pos.data() + 4, 1, nullptr);
         })},
        {"RN-51", "a ViT batch of 2 for a state sized for 1",
         call([=] {
             VitModel m;
             VitState s;
             load_tiny_vit(m, s);
             std::vector<float> pixels(size_t(2 * 3 * 32 * 32));
             vit_encode(m, s, pixels.data(), 2, nullptr, 0, nullptr, m.hp.depth);
         })},
        {"RN-52", "running 10 blocks of a 3-block ViT",
         call([=] {
             VitModel m;
             VitState s;
             load_tiny_vit(m, s);
             std::vector<float> pixels(size_t(3 * 32 * 32));
             vit_encode(m, s, pixels.data(), 1, nullptr, 0, nullptr, 10);
         })},
        {"RN-53", "tessera caption --requests pipeline 3", request_pipeline("3")},
        {"RN-54", "tessera caption --requests pipeline naming another model",
         request_pipeline("\"p.yaml\"", "model: " + fixture("tiny-llava-mha") + "\nstages: []\n")},
        {"RN-55", "tessera caption --requests pipeline with dtype f16 on an f32 run",
         request_pipeline("\"p.yaml\"", "dtype: f16\nstages: []\n")},
        {"RN-55", "tessera caption --requests pipeline with threads 3 on a 1-thread run",
         request_pipeline("\"p.yaml\"", "threads: 3\nstages: []\n")},
        {"RN-56", "use_stages(2) with one chain built",
         call([] {
             Captioner cap({.model = fixture(), .pipeline = "", .threads = 1, .dtype = "f32"});
             cap.use_stages(2);
         })},
    };
}

// Runs `f` with TESSERA_MEMORY_LIMIT set to `limit`.
Run with_limit(const char* limit, std::function<void()> f) {
    return [=] {
        MemoryLimit scope(limit);
        return api(f);
    };
}

std::vector<Trigger> memory_triggers() {
    auto load_tiny_vit = [] {
        VitModel m;
        vit_load(m, vit_folder());
    };
    auto huge_jpeg = jpeg_frame(65535, 65535) + jpeg_end;
    ImageLimits tight;
    tight.max_file_bytes = 64;
    return {
        {"MEM-1", "TESSERA_MEMORY_LIMIT=lots", with_limit("lots", load_tiny_vit)},
        {"MEM-1", "TESSERA_MEMORY_LIMIT=12T", with_limit("12T", [] { memory_available(); })},
        {"MEM-13", "TESSERA_LINEAR=fast", cli_vit("classify --model MODEL IMAGE", "TESSERA_LINEAR=fast")},
        {"MEM-14", "TESSERA_SHARES=fast", cli_vit("classify --model MODEL IMAGE", "TESSERA_SHARES=fast")},
        {"MEM-2", "tiny ViT with 1 KiB available", with_limit("1K", load_tiny_vit)},
        {"MEM-3", "tiny ViT, batch of 4096 with 4 MiB available",
         with_limit("4M",
                    [] {
                        VitModel m;
                        vit_load(m, vit_folder());
                        VitState s;
                        vit_state_init(s, m, 4096);
                    })},
        {"MEM-4", "LLaVA fixture, f32 decoder, 64 KiB available",
         with_limit("64K", [] { LlavaModel m; llava_load(m, fixture(), {.dtype = "f32"}); })},
        {"MEM-5", "LLaVA fixture, bf16 decoder, 64 KiB available",
         with_limit("64K", [] { LlavaModel m; llava_load(m, fixture(), {.dtype = "bf16"}); })},
        {"MEM-15", "LLaVA fixture read into memory with 1 KiB available",
         with_limit("1K", [] { LlavaModel m; llava_load(m, fixture(), {.dtype = "bf16", .weights_in_memory = true}); })},
        {"MEM-6", "a 64-token context with 1 KiB available",
         [] {
             const LlavaModel& m = llava_model();  // loaded without the limit
             MemoryLimit limit("1K");
             return api([&] {
                 LlamaState st;
                 llama_state_init(st, m.text, 64, 64);
             });
         }},
        {"MEM-7", "a 100000-token context for a 512-position model",
         call([] {
             LlamaState st;
             llama_state_init(st, llava_model().text, 100000, 1);
         })},
        {"MEM-8", "PNG header claiming 100000x100000", image(png_header_only(100000, 100000), "huge.png")},
        {"MEM-8", "BMP header claiming 100000x100000", image(bmp_header_only(100000, 100000), "huge.bmp")},
        {"MEM-8", "JPEG frame claiming 65535x65535", image(huge_jpeg, "huge.jpg")},
        {"MEM-9", "100-byte image with a 64-byte file limit",
         image_bytes([] { return png_header_only(4, 4) + std::string(100, '\0'); }, "big.png", tight)},
        {"MEM-11", "a 65 MiB working buffer with 1 KiB available",
         with_limit("1K", [] {
             Arena a;
             a.reserve(size_t(65) << 20);
         })},
    };
}

// The command line: usage errors, and readers reached through it.
std::vector<Trigger> cli_triggers() {
    const std::string half_jpeg = scene_jpeg().substr(0, scene_jpeg().size() / 2);
    return {
        {"CLI-1", "inspect --format yaml", cli_run("inspect --format yaml --model m")},
        {"CLI-2", "classify --logits with text output", cli_run("classify --logits --model m a.png")},
        {"CLI-3", "bench without a model", cli_run("bench")},
        {"CLI-4", "caption without an image", cli_run("caption --model m")},
        {"CLI-5", "caption --dtype f8", cli_run("caption --dtype f8 --model " + quoted(fixture()) + " a.png")},
        {"CLI-6", "no subcommand", cli_run("")},
        {"CLI-6", "analyze without its subcommand", cli_run("analyze")},
        {"CLI-7", "classify without images", cli_run("classify --model m")},
        {"CLI-7", "run without --out", cli_run("run r.yaml")},
        {"CLI-8", "--modle", cli_run("classify --modle m a.png")},
        {"CLI-9", "--modle and --foo", cli_run("classify --modle m --foo a.png")},
        {"CLI-10", "--top 0", cli_run("classify --top 0 --model m a.png")},
        {"CLI-10", "--threads 5000", cli_run("bench --threads 5000 --model m")},
        {"CLI-10", "--top many", cli_run("classify --top many --model m a.png")},
        {"CLI-11", "--seed x", cli_run("caption --seed x a.png")},
        {"CLI-12", "--model without its value", cli_run("classify --model")},
        {"ST-25", "tessera inspect, pos_embed header claims [1, 2^40]",
         [] {
             const std::string dir = vit_lying_header([](json& h) { h["pos_embed"]["shape"] = {1, uint64_t(1) << 40}; });
             return cli("inspect --model " + quoted(dir));
         }},
        {"IM-9", "tessera classify, JPEG cut in half",
         [=] { return cli_vit("classify --model MODEL " + quoted(write_file(temp_dir() + "/half.jpg", half_jpeg)))(); }},
        {"LB-4", "tessera classify --labels /dev/null", cli_vit("classify --model MODEL --labels /dev/null IMAGE")},
        {"PL-14", "tessera classify, pipeline key threds",
         [] { return cli("classify --pipeline " + quoted(yaml_file("model: " + vit_folder() + "\nthreds: 2\n")) + " a.png"); }},
        {"TK-38", "tessera tokenize, invalid UTF-8 text",
         cli_run("tokenize --model " + quoted(fixture()) + " \"$(printf 'bad \\303(')\"")},
        {"MEM-2", "tessera classify with TESSERA_MEMORY_LIMIT=1K", cli_vit("classify --model MODEL IMAGE", "TESSERA_MEMORY_LIMIT=1K")},
        {"CLI-13", "tessera classify --dtype f16", cli_vit("classify --model MODEL --dtype f16 IMAGE")},
        {"CLI-13", "tessera bench, pipeline dtype f16",
         [] { return cli("bench --pipeline " + quoted(yaml_file("model: " + vit_folder() + "\ndtype: f16\n"))); }},
        {"CF-29", "tessera bench, num_heads 5", cli_vit("bench --model MODEL", "", [](json& c) { c["model_args"]["num_heads"] = 5; })},
    };
}

std::vector<Trigger> all_triggers() {
    std::vector<Trigger> all;
    for (auto part : {weight_triggers(), config_triggers(), image_triggers(), label_triggers(), tokenizer_triggers(),
                      pipeline_triggers(), run_triggers(), memory_triggers(), cli_triggers()})
        all.insert(all.end(), part.begin(), part.end());
    return all;
}

// Real model files and images, cut short or squeezed (needs the shared folder).
std::vector<Trigger> shared_triggers() {
    const std::string deit = test::shared_dir() + "/models/deit_tiny_patch16_224.fb_in1k";
    // DeiT's config.json with its model.safetensors: a link to the shared
    // file, or a copy of its first `keep` bytes.
    auto deit_folder = [deit](uint64_t keep, const Edit& edit = {}) {
        const std::string dir = temp_dir() + "/deit";
        fs::create_directories(dir);
        fs::copy_file(deit + "/config.json", dir + "/config.json");
        if (edit) edit_json(dir + "/config.json", edit);
        if (keep == 0) {
            fs::create_symlink(deit + "/model.safetensors", dir + "/model.safetensors");
        } else {
            std::string head(size_t(keep), '\0');
            std::ifstream(deit + "/model.safetensors", std::ios::binary).read(head.data(), std::streamsize(keep));
            write_file(dir + "/model.safetensors", head);
        }
        return dir;
    };
    return {
        {"ST-26", "real DeiT-Tiny weights cut to their first 1 MiB", vit_broken([=] { return deit_folder(1 << 20); })},
        {"ST-41", "real DeiT-Tiny weights, config depth 11",
         vit_broken([=] { return deit_folder(0, [](json& c) { c["model_args"]["depth"] = 11; }); })},
        {"MEM-2", "real DeiT-Tiny (22 MB) with 16 MiB available",
         with_limit("16M", [=] { VitModel m; vit_load(m, deit_folder(0)); })},
        {"IM-9", "real ImageNet JPEG cut in half",
         image_bytes(
             [] {
                 std::vector<std::string> names;
                 for (const auto& e : fs::directory_iterator(test::shared_dir() + "/data/imagenet-val1300/images"))
                     names.push_back(e.path().string());
                 const std::string jpeg = test::read_file(*std::min_element(names.begin(), names.end()));
                 return jpeg.substr(0, jpeg.size() / 2);
             },
             "real-half.jpg")},
    };
}

// ======================================================= checking

// One line of the hostile-file table: folders dropped from paths
// ("/tmp/tessera-test-x/T-1/vit/config.json" reads "config.json"), cut short.
std::string brief(const std::string& s, size_t limit = 200) {
    static const std::regex folders(R"((/[^/\s:'"]+)+/([^/\s:'"]+))");
    std::string one = std::regex_replace(s, folders, "$2");
    std::replace(one.begin(), one.end(), '\n', ' ');
    return one.size() <= limit ? one : one.substr(0, limit) + "...";
}

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Runs each trigger, checks its message (and the CLI's exit status) against
// its documented row, prints the hostile-file table; returns the ids proved.
std::set<std::string> check_triggers(const std::vector<Trigger>& triggers, const std::map<std::string, std::string>& doc) {
    std::set<std::string> proved;
    for (const Trigger& t : triggers) {
        const auto row = doc.find(t.id);
        const std::string documented = row == doc.end() ? "(no such row)" : row->second;
        EXPECT_NE(row, doc.end()) << t.id << " (" << t.input << ") is not a row of docs/errors.md";
        const auto start = std::chrono::steady_clock::now();
        const Outcome o = t.run();
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        bool ok = row != doc.end() && template_matches(documented, o.message);
        EXPECT_TRUE(ok) << t.id << " (" << t.input << ")\n  produced:   " << o.message << "\n  documented: " << documented
                        << "\n  as regex:   " << template_pattern(documented);
        std::string status;
        if (o.exit_code >= 0) {  // CLI11's usage errors exit 2, everything else 1
            const int expected = ends_with(documented, "(see --help)") ? 2 : 1;
            EXPECT_EQ(o.exit_code, expected) << t.id << " (" << t.input << "): " << o.message;
            ok = ok && o.exit_code == expected;
            status = " (exit " + std::to_string(o.exit_code) + ")";
        }
        if (ok) proved.insert(t.id);
        std::printf("[ hostile ] %s | %s | %s%s: %s (%.0f ms)\n", t.id.c_str(), t.input.c_str(),
                    ok ? "rejected" : "MISMATCH", status.c_str(), brief(o.message).c_str(), ms);
    }
    return proved;
}

std::map<std::string, std::string> by_id(const std::vector<DocRow>& rows) {
    std::map<std::string, std::string> out;
    for (const DocRow& r : rows) out.emplace(r.id, r.message);
    return out;
}

// ======================================================= tests

TEST(ErrorsDoc, TemplatesBecomeAnchoredRegexes) {
    EXPECT_TRUE(template_matches("<file>: tensor '<name>' not found", "a/b.safetensors: tensor 'x.y' not found"));
    EXPECT_FALSE(template_matches("<file>: tensor '<name>' not found", "a: tensor 'x' not found, really"));
    EXPECT_FALSE(template_matches("<file>: empty file", "empty file"));  // a placeholder is never empty
    const std::string specials = "key 'x': expected {\"a\": N} (1..2) [3] $A ^*+?| a/b";
    EXPECT_TRUE(template_matches(specials, specials));
    EXPECT_EQ(code_span_text("`a`"), "a");
    EXPECT_EQ(code_span_text("`` a `b` c ``"), "a `b` c");
    EXPECT_EQ(code_span_text("a `b`"), "");
    EXPECT_EQ(table_cells("| A-1 | x \\| y | `m` |"), (std::vector<std::string>{"A-1", "x | y", "`m`"}));
}

TEST(ErrorsDoc, EveryRowHasAUniqueIdAndOneMessage) {
    const std::vector<DocRow> rows = the_document();
    ASSERT_GT(rows.size(), 100u) << "docs/errors.md not found or without tables";
    // A row that does not split into id | cause | message would be skipped silently.
    std::ifstream in(std::string(TESSERA_SOURCE_DIR) + "/docs/errors.md");
    size_t id_lines = 0;
    for (std::string line; std::getline(in, line);)
        id_lines += std::regex_search(line, std::regex("^\\| [A-Z]+-[0-9]+ \\|"));
    EXPECT_EQ(id_lines, rows.size()) << "a table row has other than 3 cells";
    std::set<std::string> ids;
    for (const DocRow& r : rows) {
        EXPECT_TRUE(ids.insert(r.id).second) << r.id << " appears twice";
        EXPECT_FALSE(r.message.empty()) << r.id << ": the message column is not one code span";
    }
}

TEST(ErrorsDoc, HostileInputsProduceTheDocumentedMessages) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<DocRow> rows = the_document();
    const std::map<std::string, std::string> doc = by_id(rows);
    ASSERT_FALSE(doc.empty());
    const std::vector<Trigger> triggers = all_triggers();
    const std::set<std::string> proved = check_triggers(triggers, doc);

    // Enough of the document is proved, in every area.
    EXPECT_GE(proved.size(), 40u);
    std::map<std::string, int> per_area;
    for (const std::string& id : proved) per_area[id.substr(0, id.find('-'))] += 1;
    for (const char* area : {"ST", "CF", "IM", "LB", "TK", "PL", "RN", "MEM", "CLI"})
        EXPECT_GT(per_area[area], 0) << "no documented " << area << " message was reproduced";

    // Hostile headers fail before anything of the size they claim is
    // allocated (2^40-element tensors, 100000x100000 images): the process
    // stays small.
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    EXPECT_LT(usage.ru_maxrss, 2L << 20) << "peak resident set " << usage.ru_maxrss << " KiB";

    std::set<std::string> triggered;
    for (const Trigger& t : triggers) triggered.insert(t.id);
    std::string untriggered;
    for (const DocRow& r : rows)
        if (!triggered.count(r.id)) untriggered += " " + r.id;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("[ coverage ] %zu documented rows, %zu triggers, %zu ids reproduced; peak RSS %ld MiB; %.1f s\n",
                rows.size(), triggers.size(), proved.size(), usage.ru_maxrss / 1024, seconds);
    std::printf("[ untriggered ]%s\n", untriggered.c_str());
}

TEST(ErrorsDoc, RealFilesCutShortOrSqueezed) {
    TESSERA_REQUIRE_SHARED();
    const std::vector<Trigger> triggers = shared_triggers();
    EXPECT_EQ(check_triggers(triggers, by_id(the_document())).size(), 4u);
}

}  // namespace
}  // namespace tessera
