#include "cli/commands.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/serve.h"
#include "io/labels.h"
#include "io/tokenizer.h"
#include "io/safetensors.h"
#include "pipeline/config.h"
#include "pipeline/report.h"
#include "pipeline/runner.h"
#include "tessera/analyze.h"
#include "tessera/captioner.h"
#include "tessera/classifier.h"
#include "tessera/error.h"
#include "tessera/memory.h"

using nlohmann::json;

namespace tessera::cli {

namespace {

void check_format(const std::string& format, std::initializer_list<const char*> allowed) {
    for (const char* a : allowed)
        if (format == a) return;
    std::string list;
    for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    fail("--format", "expected one of " + list + ", got '" + format + "'");
}

std::string label_of(const std::vector<std::string>& names, int index) {
    return index >= 0 && index < int(names.size()) ? names[size_t(index)] : "class " + std::to_string(index);
}

constexpr const char* dtype_help =
    "Weight matrices: f32 or bf16 (rounded once at load; products accumulate in f32). "
    "Default: the pipeline's dtype, else f32";

double peak_rss_mib() { return double(peak_resident_bytes()) / double(1 << 20); }

// A fixed synthetic input: the same pseudo-random pixels in every run.
std::vector<float> synthetic_pixels(size_t n) {
    std::vector<float> v(n);
    uint32_t state = 12345u;
    for (float& x : v) {
        state = state * 1664525u + 1013904223u;
        x = float(state >> 8) / float(1u << 24) * 2.0f - 1.0f;
    }
    return v;
}

std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace

void add_classify(CLI::App& app) {
    struct Opts {
        std::string model, pipeline, labels, format = "text", visualize, dtype;
        int top = 5, threads = 0;
        bool logits = false;
        std::vector<std::string> images;
    };
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("classify", "Top-k ImageNet-style classification of image files");
    cmd->add_option("--model", o->model, "Model folder (config.json + model.safetensors) or model name");
    cmd->add_option("--pipeline", o->pipeline, "Pipeline YAML (stage chain)");
    cmd->add_option("--top", o->top, "How many classes to print")->check(CLI::Range(1, 1000));
    cmd->add_option("--format", o->format, "text or jsonl");
    cmd->add_option("--labels", o->labels, "Class-name TSV (default: ImageNet-1k)");
    cmd->add_flag("--logits", o->logits, "jsonl: also every raw logit (for multi-label heads)");
    cmd->add_option("--threads", o->threads, "Threads (default: OMP_NUM_THREADS or all cores)")->check(CLI::Range(0, 1024));
    cmd->add_option("--dtype", o->dtype, dtype_help);
    cmd->add_option("--visualize", o->visualize,
                    "Write a PNG per image showing each stage's effect on the patches (several images: OUT-1.png, ...)");
    cmd->add_option("images", o->images, "Image files (JPEG, PNG, BMP)")->required();
    cmd->callback([o] {
        check_format(o->format, {"text", "jsonl"});
        if (o->logits && o->format != "jsonl") fail("classify", "--logits needs --format jsonl");
        if (o->model.empty() && o->pipeline.empty()) fail("classify", "give --model (or a --pipeline with a 'model' key)");
        Classifier clf({o->model, o->pipeline, o->threads, 1, o->dtype});
        const std::vector<std::string> names = o->labels.empty() ? class_names_imagenet() : class_names_read(o->labels);
        for (size_t i = 0; i < o->images.size(); ++i) {
            const std::string& image = o->images[i];
            std::string png = o->visualize;
            if (!png.empty() && o->images.size() > 1) {
                const size_t dot = png.rfind('.');
                png = png.substr(0, dot) + "-" + std::to_string(i + 1) + (dot == std::string::npos ? ".png" : png.substr(dot));
            }
            Classification c = png.empty() ? clf.classify_file(image, o->top) : clf.classify_file_visualized(image, o->top, png);
            if (o->format == "jsonl") {
                json top = json::array();
                for (const Prediction& p : c.top)
                    top.push_back({{"class", p.class_index}, {"label", label_of(names, p.class_index)}, {"prob", p.prob}});
                json line = {{"image", image}, {"top", top}, {"gmacs", double(c.macs) * 1e-9}, {"ms", c.ms},
                             {"tokens", c.tokens}};
                if (o->logits) line["logits"] = c.logits;
                std::cout << line.dump() << "\n";
            } else {
                std::printf("%s\n", image.c_str());
                for (size_t i = 0; i < c.top.size(); ++i)
                    std::printf("  %2zu. %-32s %6.2f%%  (class %d)\n", i + 1, label_of(names, c.top[i].class_index).c_str(),
                                100.0 * c.top[i].prob, c.top[i].class_index);
                std::printf("  %.4f GMACs, %.2f ms, tokens %d -> %d\n", double(c.macs) * 1e-9, c.ms,
                            c.tokens.empty() ? 0 : c.tokens.front(), c.tokens.empty() ? 0 : c.tokens.back());
            }
            std::fflush(stdout);
        }
    });
}

void add_bench(CLI::App& app) {
    struct Opts {
        std::string model, pipeline, format = "text", dtype;
        int batch = 1, iters = 50, warmup = 5, threads = 0;
        bool serve = false;
    };
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("bench", "Latency of the forward pass on a fixed synthetic input");
    cmd->add_option("--model", o->model, "Model folder or name");
    cmd->add_option("--pipeline", o->pipeline, "Pipeline YAML");
    cmd->add_option("--batch", o->batch, "Images per forward pass")->check(CLI::Range(1, 4096));
    cmd->add_option("--iters", o->iters, "Timed iterations")->check(CLI::Range(1, 1000000));
    cmd->add_option("--warmup", o->warmup, "Untimed iterations first")->check(CLI::Range(0, 1000000));
    cmd->add_option("--threads", o->threads, "Threads")->check(CLI::Range(0, 1024));
    cmd->add_option("--dtype", o->dtype, dtype_help);
    cmd->add_option("--format", o->format, "text or json");
    cmd->add_flag("--serve", o->serve,
                  "After the warm-up print the facts as JSON, then answer bench/paired.py: for each stdin line "
                  "'W N', run W untimed and N timed forward passes and print {\"ms\": [N times]}");
    cmd->callback([o] {
        check_format(o->format, {"text", "json"});
        if (o->model.empty() && o->pipeline.empty()) fail("bench", "give --model (or a --pipeline with a 'model' key)");
        Classifier clf({o->model, o->pipeline, o->threads, o->batch, o->dtype});
        std::vector<float> pixels = synthetic_pixels(size_t(clf.input_floats()) * size_t(o->batch));
        uint64_t macs = 0;
        auto forward = [&] { macs = clf.classify(pixels.data(), o->batch, 1)[0].macs; };
        auto facts = [&] {
            return json{{"gmacs", double(macs) * 1e-9}, {"batch", o->batch},      {"threads", clf.threads()},
                        {"model", clf.model_dir()},    {"dtype", clf.dtype()},    {"linear", clf.linear_path()},
                        {"pipeline", o->pipeline}};
        };
        if (o->serve) {
            time_calls(std::max(o->warmup, 1), 0, forward);
            std::cout << facts().dump() << "\n";
            serve_paired_blocks(forward);
            return;
        }
        const std::vector<double> ms = time_calls(o->warmup, o->iters, forward);
        json out = facts();
        out.update({{"ms_p50", percentile(ms, 50)}, {"ms_p90", percentile(ms, 90)}, {"iters", o->iters},
                    {"peak_rss_mib", peak_rss_mib()}});
        if (o->format == "json") {
            std::cout << out.dump() << "\n";
        } else {
            std::printf("%s  batch %d  threads %d  %s (%s)\n  p50 %.3f ms  p90 %.3f ms  (%d iterations)\n"
                        "  %.4f GMACs/image\n  peak memory %.1f MiB\n",
                        clf.model_dir().c_str(), o->batch, clf.threads(), clf.dtype(), clf.linear_path(),
                        percentile(ms, 50), percentile(ms, 90), o->iters, double(macs) * 1e-9, peak_rss_mib());
        }
    });
}

void add_run(CLI::App& app) {
    struct Opts {
        std::string config, out;
        int threads = 0;
        bool no_progress = false;
    };
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("run", "Run a pipeline over a labelled image folder (resumable)");
    cmd->add_option("config", o->config, "Run YAML (model, stages, dataset)")->required();
    cmd->add_option("--out", o->out, "Output folder (results.jsonl, summary.json)")->required();
    cmd->add_option("--threads", o->threads, "Threads (overrides the config)")->check(CLI::Range(0, 1024));
    cmd->add_flag("--no-progress", o->no_progress, "Never draw the progress bar");
    cmd->callback([o] {
        RunSpec spec = run_config_read(o->config);
        json summary = run_dataset(spec, {o->out, o->threads, !o->no_progress && isatty(STDERR_FILENO)});
        std::cout << summary.dump(2) << "\n";
    });
}

void add_report(CLI::App& app) {
    struct Opts {
        std::string config, out;
        bool no_progress = false;
    };
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("report", "Compare pipelines: accuracy, GMACs, latency, tokens; Markdown, CSV, JSON, plot");
    cmd->add_option("config", o->config, "Report YAML (model, dataset, pipelines)")->required();
    cmd->add_option("--out", o->out, "Output folder (report.md, report.csv, report.json, pareto.png)")->required();
    cmd->add_flag("--no-progress", o->no_progress, "Never draw progress");
    cmd->callback([o] {
        ReportSpec spec = report_config_read(o->config);
        report_run(spec, o->out, !o->no_progress && isatty(STDERR_FILENO));
        std::cout << read_text(o->out + "/report.md");
    });
}

void add_inspect(CLI::App& app) {
    struct Opts {
        std::string model, pipeline, format = "text";
        bool tensors = false;
    };
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("inspect", "Parameters, tensors and GMACs per image by component");
    cmd->add_flag("--tensors", o->tensors, "Also list every tensor of the weights file (name, dtype, shape)");
    cmd->add_option("--model", o->model, "Model folder or name");
    cmd->add_option("--pipeline", o->pipeline, "Pipeline YAML (GMACs with its stages)");
    cmd->add_option("--format", o->format, "text or json");
    cmd->callback([o] {
        check_format(o->format, {"text", "json"});
        if (o->model.empty() && o->pipeline.empty()) fail("inspect", "give --model (or a --pipeline with a 'model' key)");
        Classifier clf({o->model, o->pipeline, 1, 1});
        // MACs come from the ledger of one real forward pass, never from a formula.
        std::vector<float> pixels = synthetic_pixels(size_t(clf.input_floats()));
        Classification c = clf.classify(pixels.data(), 1, 1)[0];
        const Ledger& ledger = clf.last_ledger();
        json components = json::object();
        for (int i = 0; i < int(Component::count_); ++i)
            if (uint64_t v = ledger.by_component(Component(i)))
                components[component_name(Component(i))] = double(v) * 1e-9;
        json stages = json::object();
        for (const auto& [name, v] : ledger.by_stage()) stages[name] = double(v) * 1e-9;
        json out = {{"model", clf.model_dir()}, {"architecture", clf.architecture()}, {"parameters", clf.parameters()},
                    {"tensors", clf.tensor_count()}, {"depth", clf.depth()}, {"num_classes", clf.num_classes()},
                    {"gmacs", double(ledger.total()) * 1e-9}, {"gmacs_by_component", components},
                    {"gmacs_by_stage", stages}, {"tokens", c.tokens}};
        if (o->tensors) {
            SafeTensors file(clf.model_dir() + "/model.safetensors");
            json list = json::array();
            for (const TensorInfo& t : file.tensors())
                list.push_back({{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}});
            out["tensor_list"] = list;
        }
        if (o->format == "json") {
            std::cout << out.dump(2) << "\n";
            return;
        }
        std::printf("%s (%s)\n", clf.model_dir().c_str(), clf.architecture().c_str());
        std::printf("  parameters  %lld in %lld tensors\n", (long long)clf.parameters(), (long long)clf.tensor_count());
        std::printf("  depth %d, classes %d\n", clf.depth(), clf.num_classes());
        std::printf("  GMACs/image %.4f\n", double(ledger.total()) * 1e-9);
        for (auto& [name, v] : components.items()) std::printf("    %-12s %.4f\n", name.c_str(), v.get<double>());
        std::printf("  by stage\n");
        for (auto& [name, v] : stages.items()) std::printf("    %-12s %.4f\n", name.c_str(), v.get<double>());
        if (o->tensors) {
            std::printf("  tensors\n");
            for (const json& t : out["tensor_list"])
                std::printf("    %-40s %-5s %s\n", t["name"].get<std::string>().c_str(), t["dtype"].get<std::string>().c_str(),
                            shape_string(t["shape"].get<std::vector<int64_t>>()).c_str());
        }
    });
}

}  // namespace tessera::cli

namespace tessera::cli {
namespace {

json caption_json(const Caption& c) {
    json top = json::array();
    for (const auto& [id, logit] : c.first_logits_top5) top.push_back({id, logit});
    json out = {{"text", c.text},
            {"token_ids", c.token_ids},
            {"stop_reason", c.stop_reason},
            {"prompt_tokens", c.prompt_tokens},
            {"visual_tokens", c.visual_tokens},
            {"decoder_tokens", c.decoder_tokens},
            {"decoder_visual_tokens", c.decoder_visual_tokens},
            {"first_logits_top5", top},
            {"gmacs",
             {{"vision", double(c.macs_vision) * 1e-9},
              {"projector", double(c.macs_projector) * 1e-9},
              {"prefill", double(c.macs_prefill) * 1e-9},
              {"decode", double(c.macs_decode) * 1e-9}}},
            {"ms",
             {{"preprocess", c.ms_preprocess},
              {"vision", c.ms_vision},
              {"prefill", c.ms_prefill},
              {"first_token", c.ms_first_token},
              {"decode", c.ms_decode},
              {"total", c.ms_total}}}};
    if (c.contrast_visual_tokens) out["contrast_visual_tokens"] = c.contrast_visual_tokens;
    return out;
}

// One JSON line per request line: {"id", "image", "prompt", "pipeline",
// "peak_rss_mib", ...caption_json}.
// Consecutive requests about the same image through the same stages encode
// it once (their ms and GMACs still include the encoding). A request's
// "pipeline" (a YAML file, relative to the requests file as images are)
// replaces the command's stages for that request, on the same loaded model:
// full and pruned requests alternate in one process.
void caption_requests(Captioner& cap, const GenerateOptions& defaults, const std::string& path) {
    std::ifstream in(path);
    if (!in) fail(path, "cannot open");
    const std::string base = std::filesystem::path(path).parent_path().string();
    auto beside_requests = [&](const std::string& name) {
        std::filesystem::path p(name);
        if (p.is_relative() && !base.empty()) p = std::filesystem::path(base) / p;
        return p.string();
    };
    std::map<std::string, int> chains;  // pipeline file -> stage chain (0: the command's)
    std::string line, encoded;  // consecutive requests about one image share its encoding
    std::vector<float> pixels(static_cast<size_t>(cap.input_floats()));
    for (int number = 1; std::getline(in, line); ++number) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = path + ":" + std::to_string(number);
        json req = json::parse(line, nullptr, false);
        if (req.is_discarded() || !req.is_object()) fail(where, "expected a JSON object");
        if (!req.contains("image") || !req["image"].is_string()) fail(where, "key 'image': expected a file name");
        GenerateOptions g = defaults;
        if (req.contains("prompt")) {
            if (!req["prompt"].is_string()) fail(where, "key 'prompt': expected a string");
            g.prompt = req["prompt"];
        }
        int chain = 0;
        if (req.contains("pipeline")) {
            if (!req["pipeline"].is_string() || req["pipeline"].get<std::string>().empty())
                fail(where, "key 'pipeline': expected a pipeline YAML file name");
            const std::string file = beside_requests(req["pipeline"]);
            auto known = chains.find(file);
            if (known == chains.end()) {
                try {
                    known = chains.emplace(file, cap.add_stages(pipeline_read(file))).first;
                } catch (const Error& e) {
                    fail(where, e.what());
                }
            }
            chain = known->second;
        }
        const std::string image = beside_requests(req["image"]);
        const std::string key = image + "\n" + std::to_string(chain);
        if (key != encoded) {
            cap.use_stages(chain);
            cap.load_image(image, pixels.data());
            cap.encode_pixels(pixels.data());
            encoded = key;
        }
        json out = caption_json(cap.generate(g));
        out["image"] = req["image"];
        out["prompt"] = g.prompt;
        if (req.contains("pipeline")) out["pipeline"] = req["pipeline"];
        if (req.contains("id")) out["id"] = req["id"];
        out["peak_rss_mib"] = peak_rss_mib();  // the process's peak so far
        std::cout << out.dump() << "\n";
        std::cout.flush();
    }
}

}  // namespace


void add_caption(CLI::App& app) {
    struct Opts {
        std::string model, pipeline, prompt = "Describe the image.", format = "text", dtype;
        int max_new_tokens = 64, threads = 0, top_k = 0;
        float temperature = 0.0f, top_p = 1.0f;
        uint64_t seed = 0;
        bool ignore_eos = false;
        bool no_mmap = false;
        std::string image, requests;
    };
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("caption", "Caption an image (or answer --prompt about it) with a LLaVA model");
    cmd->add_option("--model", o->model,
                    "LLaVA model folder (Hugging Face layout) or model name (default: the bundled demo model, "
                    "shapescenes-llava)");
    cmd->add_option("--pipeline", o->pipeline, "Pipeline YAML (stages on the vision tower)");
    cmd->add_option("--prompt", o->prompt, "What to ask (placed in the LLaVA-1.5 template)");
    cmd->add_option("--max-new-tokens", o->max_new_tokens, "Generation budget")->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--format", o->format, "text (streamed) or json");
    cmd->add_option("--temperature", o->temperature, "0 = greedy (default); > 0 samples")->check(CLI::Range(0.0, 100.0));
    cmd->add_option("--top-k", o->top_k, "Sample among the k most likely tokens (0 = off)")->check(CLI::Range(0, 1 << 22));
    cmd->add_option("--top-p", o->top_p, "Nucleus sampling mass (1 = off)")->check(CLI::Range(1e-6, 1.0));
    cmd->add_option("--seed", o->seed, "Sampling seed");
    cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-sequence tokens");
    cmd->add_option("--dtype", o->dtype,
                    "Decoder weights while running: auto, f32, bf16, f16 (default: the pipeline's dtype, else auto)");
    cmd->add_option("--threads", o->threads, "Threads (default: OMP_NUM_THREADS or all cores)")->check(CLI::Range(0, 1024));
    cmd->add_flag("--no-mmap", o->no_mmap,
                  "Read the weights into memory instead of mapping the files: slower to load, faster decode where "
                  "mapped pages read slowly");
    cmd->add_option("--requests", o->requests,
                    "JSONL of {\"image\", \"prompt\", \"id\", \"pipeline\"} (files relative to it): one JSON "
                    "line out per request, one model load; a request's pipeline YAML replaces --pipeline's stages");
    cmd->add_option("image", o->image, "Image file (JPEG, PNG, BMP)");
    cmd->callback([o] {
        check_format(o->format, {"text", "json"});
        if (o->image.empty() == o->requests.empty()) fail("caption", "give one IMAGE, or --requests FILE.jsonl");
        Captioner cap({o->model, o->pipeline, o->threads, o->dtype, o->no_mmap});
        GenerateOptions g;
        g.prompt = o->prompt, g.max_new_tokens = o->max_new_tokens, g.temperature = o->temperature;
        g.top_k = o->top_k, g.top_p = o->top_p, g.seed = o->seed, g.stop_at_eos = !o->ignore_eos;
        if (!o->requests.empty()) {
            caption_requests(cap, g, o->requests);
            return;
        }
        const bool stream = o->format == "text";
        bool started = false;  // the answer's leading space is not shown (as LLaVA's demos strip it)
        Caption c = cap.caption_file(o->image, g, [&](const std::string& piece) {
            if (!stream) return;
            size_t skip = started ? 0 : piece.find_first_not_of(' ');
            if (skip == std::string::npos) return;
            started = true;
            std::fputs(piece.c_str() + skip, stdout);
            std::fflush(stdout);
        });
        if (stream) {
            std::fputs("\n", stdout);
            return;
        }
        json out = caption_json(c);
        out["peak_rss_mib"] = peak_rss_mib();
        std::cout << out.dump() << "\n";
    });
}

}  // namespace tessera::cli

namespace tessera::cli {

void add_tokenize(CLI::App& app) {
    struct Opts {
        std::string model;
        bool no_special = false;
        std::vector<std::string> texts;
    };
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("tokenize", "Token ids of texts with a model folder's tokenizer (one JSON line each)");
    cmd->add_option("--model", o->model, "Model folder with tokenizer.json or tokenizer.model (default: the demo model)");
    cmd->add_flag("--no-special", o->no_special, "Do not add BOS/EOS (HF add_special_tokens=False)");
    cmd->add_option("texts", o->texts, "Texts (use $'...' for newlines)")->required();
    cmd->callback([o] {
        const std::string dir = model_resolve(o->model.empty() ? default_caption_model : o->model);
        const std::unique_ptr<Tokenizer> tok = Tokenizer::load(dir);
        for (const std::string& text : o->texts) {
            const std::vector<int32_t> ids = tok->encode(text, !o->no_special);
            std::cout << json{{"text", text}, {"ids", ids}, {"decoded", tok->decode(ids, false)}}.dump() << "\n";
        }
    });
}

void add_analyze(CLI::App& app) {
    struct Opts {
        SinkAnalysisOptions sinks;
        std::string out;
    };
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("analyze", "Offline analyses of a model that stages read");
    cmd->require_subcommand(1);
    CLI::App* sinks = cmd->add_subcommand(
        "sinks", "Find a LLaVA decoder's massive-activation (sink) dimensions for the var stage");
    sinks->add_option("--model", o->sinks.model, "LLaVA folder (default: the demo model)");
    sinks->add_option("--prompt", o->sinks.prompt, "Prompt placed after the image");
    sinks->add_option("--tau", o->sinks.tau, "Sink threshold on |x_d| / rms(x) (VAR: 20)");
    sinks->add_option("--first-layer", o->sinks.first_layer, "First decoder layer whose input is scanned (VAR: 2)");
    sinks->add_option("--threads", o->sinks.threads, "Threads")->check(CLI::Range(0, 1024));
    sinks->add_option("--out", o->out, "Where to write the result (default: MODEL/var_sinks.json)");
    sinks->add_option("images", o->sinks.images, "A few images the model will see")->required();
    sinks->callback([o] {
        const SinkAnalysis a = analyze_sinks(o->sinks);
        const std::string dir = model_resolve(o->sinks.model.empty() ? default_caption_model : o->sinks.model);
        const std::string out = o->out.empty() ? dir + "/var_sinks.json" : o->out;
        json strongest = json::array();
        for (const SinkDimension& s : a.strongest)
            strongest.push_back({{"dim", s.dim}, {"max_ratio", s.max_ratio}, {"tokens_over_tau", s.tokens_over_tau}});
        const json j = {{"dims", a.dims},
                        {"tau", o->sinks.tau},
                        {"first_layer", o->sinks.first_layer},
                        {"images", o->sinks.images.size()},
                        {"tokens_scanned", a.tokens_scanned},
                        {"strongest", strongest}};
        write_atomically(out, j.dump(1) + "\n");
        std::printf("%zu sink dimension(s) over tau %.1f in %lld (layer, token) inputs of %zu image(s): wrote %s\n",
                    a.dims.size(), double(o->sinks.tau), static_cast<long long>(a.tokens_scanned),
                    o->sinks.images.size(), out.c_str());
        for (const SinkDimension& s : a.strongest)
            std::printf("  dim %5d  max |x_d|/rms %7.2f  inputs over tau %lld\n", s.dim, double(s.max_ratio),
                        static_cast<long long>(s.tokens_over_tau));
        const double bound = std::sqrt(double(a.hidden));
        if (o->sinks.tau >= bound)
            std::printf("note: |x_d|/rms(x) is at most sqrt(hidden) = %.1f for this decoder, so tau %.1f can never be "
                        "exceeded; VAR's tau = 20 was set for 4096-wide decoders\n",
                        bound, double(o->sinks.tau));
    });
}

}  // namespace tessera::cli
