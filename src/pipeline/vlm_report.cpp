// `tessera report` with task: caption: several stage chains on one LLaVA
// model over captioning / QA requests, compared on quality (caption object
// F1, CHAIR, yes/no per negative kind, counts), hallucination, visual tokens
// in the decoder, GMACs by part, time to first token and decode speed.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "io/timm_config.h"
#include "pipeline/report.h"
#include "pipeline/runner.h"
#include "tessera/captioner.h"
#include "tessera/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tessera {

namespace {

std::string lower(std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

bool word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// The first word of an answer, lower case ("Yes." -> "yes").
std::string first_word(const std::string& text) {
    std::string w;
    for (char c : text) {
        if (word_char(c)) w += char(std::tolower(static_cast<unsigned char>(c)));
        else if (!w.empty()) break;
    }
    return w;
}

struct Request {
    std::string id, image, prompt, task, answer, negative;
    std::vector<std::string> objects;
};

// Requests grouped by image, in file order; the first `images` images.
std::vector<std::pair<std::string, std::vector<Request>>> requests_read(const CaptionDatasetSpec& d) {
    std::ifstream in(d.requests);
    if (!in) fail(d.requests, "cannot open");
    const std::string base = fs::path(d.requests).parent_path().string();
    std::vector<std::pair<std::string, std::vector<Request>>> groups;
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = d.requests + ":" + std::to_string(number);
        const json j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object()) fail(where, "expected a JSON object");
        Request r;
        r.id = json_string(j, "id", "", where);
        r.image = json_string(j, "image", "", where);
        r.prompt = json_string(j, "prompt", "", where);
        r.task = json_string(j, "task", "", where);
        r.answer = lower(json_string(j, "answer", "", where));
        if (j.contains("negative") && j["negative"].is_string()) r.negative = j["negative"];
        if (r.image.empty() || r.prompt.empty()) fail(where, "keys 'image' and 'prompt' are required");
        if (r.task == "caption") {
            if (!j.contains("objects") || !j["objects"].is_array()) fail(where, "a caption request needs 'objects'");
            for (const json& o : j["objects"]) {
                if (!o.is_string()) fail(where, "key 'objects': expected strings");
                r.objects.push_back(lower(o.get<std::string>()));
            }
        } else if (r.task == "yesno") {
            if (r.answer != "yes" && r.answer != "no") fail(where, "a yesno request's answer must be yes or no");
            if (r.answer == "no" && r.negative.empty()) fail(where, "a 'no' request needs its 'negative' kind");
        } else if (r.task == "count") {
            if (r.answer.empty()) fail(where, "a count request needs its 'answer'");
        } else {
            fail(where, "key 'task': expected caption, yesno or count, got '" + r.task + "'");
        }
        fs::path image(r.image);
        if (image.is_relative()) image = fs::path(base) / image;
        r.image = image.string();
        if (groups.empty() || groups.back().first != r.image) {
            if (d.images > 0 && int(groups.size()) == d.images) break;
            groups.push_back({r.image, {}});
        }
        groups.back().second.push_back(std::move(r));
    }
    if (groups.empty()) fail(d.requests, "no requests");
    return groups;
}

std::vector<std::string> vocabulary_read(const std::string& path) {
    const json j = json_read_file(path);
    if (!j.is_object() || !j.contains("objects") || !j["objects"].is_array())
        fail(path, "expected {\"objects\": [phrases]}");
    std::vector<std::string> v;
    for (const json& o : j["objects"]) {
        if (!o.is_string() || o.get<std::string>().empty()) fail(path, "key 'objects': expected non-empty strings");
        v.push_back(lower(o.get<std::string>()));
    }
    return v;
}

// Binary counts for yes/no: positive = "yes".
struct YesNo {
    int64_t tp = 0, fp = 0, tn = 0, fn = 0, unparsed = 0;
    void add(bool truth_yes, const std::string& said) {
        const std::string w = first_word(said);
        const bool yes = w == "yes";
        unparsed += w != "yes" && w != "no";
        (truth_yes ? (yes ? tp : fn) : (yes ? fp : tn)) += 1;
    }
    int64_t n() const { return tp + fp + tn + fn; }
    double accuracy() const { return n() ? double(tp + tn) / double(n()) : 0; }
    double precision() const { return tp + fp ? double(tp) / double(tp + fp) : 0; }
    double recall() const { return tp + fn ? double(tp) / double(tp + fn) : 0; }
    double f1() const {
        const double p = precision(), r = recall();
        return p + r > 0 ? 2 * p * r / (p + r) : 0;
    }
    double yes_ratio() const { return n() ? double(tp + fp) / double(n()) : 0; }
};

struct Result {
    // captions
    int64_t captions = 0, tp = 0, fp = 0, fn = 0, mentions = 0, hallucinated = 0, captions_hallucinating = 0;
    // yes/no: positives feed every kind's set
    std::map<std::string, YesNo> per_kind;  // random, popular, adversarial, ...
    YesNo yesno;
    std::vector<std::pair<bool, std::string>> positives;  // answers to the positive questions
    int64_t counts = 0, counts_right = 0;
    // cost
    int64_t requests = 0;
    double visual = 0, macs_vision = 0, macs_projector = 0, macs_prefill = 0, macs_decode = 0;
    std::vector<double> decoder_visual;  // per layer, summed
    std::vector<double> ttft;
    double decode_tokens = 0, decode_ms = 0;
    double exit_layer_sum = 0;
    int64_t exits = 0;
};

double ratio(double a, double b) { return b > 0 ? a / b : 0; }

}  // namespace

std::vector<std::string> caption_mentions(const std::string& caption, const std::vector<std::string>& vocabulary) {
    const std::string text = lower(caption);
    std::vector<std::string> phrases = vocabulary;
    std::sort(phrases.begin(), phrases.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size() || (a.size() == b.size() && a < b); });
    std::vector<std::pair<size_t, std::string>> found;  // position, phrase
    std::vector<bool> taken(text.size(), false);
    for (const std::string& p : phrases)
        for (size_t at = text.find(p); at != std::string::npos; at = text.find(p, at + 1)) {
            const size_t end = at + p.size();
            if ((at > 0 && word_char(text[at - 1])) || (end < text.size() && word_char(text[end]))) continue;
            if (std::any_of(taken.begin() + long(at), taken.begin() + long(end), [](bool t) { return t; })) continue;
            std::fill(taken.begin() + long(at), taken.begin() + long(end), true);
            found.push_back({at, p});
        }
    std::sort(found.begin(), found.end());
    std::vector<std::string> out;
    for (auto& [at, p] : found) out.push_back(p);
    return out;
}

json vlm_report_run(const ReportSpec& spec, const std::string& out_dir, bool progress) {
    const auto groups = requests_read(spec.captions);
    const std::vector<std::string> vocabulary = vocabulary_read(spec.captions.vocabulary);
    // One loaded model; each pipeline is a stage chain on it.
    Captioner cap(report_pipeline_spec(spec, spec.pipelines[0]), spec.threads, "", spec.no_mmap);
    for (size_t p = 1; p < spec.pipelines.size(); ++p) cap.add_stages(report_pipeline_spec(spec, spec.pipelines[p]));
    const size_t pipelines = spec.pipelines.size();
    fs::create_directories(out_dir);
    std::vector<float> pixels(static_cast<size_t>(cap.input_floats()));
    GenerateOptions g;
    g.max_new_tokens = spec.max_new_tokens;

    // Warm-up: every pipeline once, untimed.
    cap.load_image(groups[0].first, pixels.data());
    for (size_t p = 0; p < pipelines; ++p) {
        cap.use_stages(int(p));
        cap.encode_pixels(pixels.data());
        g.prompt = groups[0].second[0].prompt;
        cap.generate(g);
    }

    std::vector<Result> results(pipelines);
    int64_t total_requests = 0;
    for (const auto& [image, reqs] : groups) total_requests += int64_t(reqs.size());
    const auto start = std::chrono::steady_clock::now();
    size_t done = 0;
    for (const auto& [image, reqs] : groups) {
        cap.load_image(image, pixels.data());
        for (size_t p = 0; p < pipelines; ++p) {
            Result& r = results[p];
            cap.use_stages(int(p));
            cap.encode_pixels(pixels.data());
            for (const Request& q : reqs) {
                g.prompt = q.prompt;
                const Caption c = cap.generate(g);
                ++r.requests;
                r.visual += double(c.visual_tokens);
                r.macs_vision += double(c.macs_vision), r.macs_projector += double(c.macs_projector);
                r.macs_prefill += double(c.macs_prefill), r.macs_decode += double(c.macs_decode);
                r.decoder_visual.resize(c.decoder_visual_tokens.size(), 0.0);
                for (size_t l = 0; l < c.decoder_visual_tokens.size(); ++l)
                    r.decoder_visual[l] += double(c.decoder_visual_tokens[l]);
                // Exit layer: the last layer that still saw visual tokens, when a later one saw none.
                for (size_t l = 0; l + 1 < c.decoder_visual_tokens.size(); ++l)
                    if (c.decoder_visual_tokens[l] > 0 && c.decoder_visual_tokens[l + 1] == 0) {
                        r.exit_layer_sum += double(l);
                        ++r.exits;
                    }
                r.ttft.push_back(c.ms_first_token);
                r.decode_tokens += double(std::max<size_t>(c.token_ids.size(), 1) - 1);
                r.decode_ms += c.ms_decode;
                if (q.task == "caption") {
                    const std::vector<std::string> said = caption_mentions(c.text, vocabulary);
                    const std::set<std::string> truth(q.objects.begin(), q.objects.end());
                    const std::set<std::string> mentioned(said.begin(), said.end());
                    ++r.captions;
                    for (const std::string& m : mentioned) (truth.count(m) ? r.tp : r.fp) += 1;
                    for (const std::string& t : truth) r.fn += !mentioned.count(t);
                    int64_t bad = 0;
                    for (const std::string& m : said) bad += !truth.count(m);
                    r.mentions += int64_t(said.size());
                    r.hallucinated += bad;
                    r.captions_hallucinating += bad > 0;
                } else if (q.task == "yesno") {
                    const bool truth_yes = q.answer == "yes";
                    r.yesno.add(truth_yes, c.text);
                    if (truth_yes) r.positives.push_back({true, c.text});
                    else r.per_kind[q.negative].add(false, c.text);
                } else {
                    ++r.counts;
                    r.counts_right += first_word(c.text) == first_word(q.answer);
                }
            }
        }
        done += reqs.size();
        if (progress) {
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            std::fprintf(stderr, "\r%zu/%lld requests, %zu pipelines, %.0f s", done,
                         static_cast<long long>(total_requests), pipelines, s);
            if (int64_t(done) == total_requests) std::fputc('\n', stderr);
        }
    }
    // Each negative kind's set: the positives plus that kind's negatives (POPE).
    for (Result& r : results)
        for (auto& [kind, yn] : r.per_kind)
            for (const auto& [truth, text] : r.positives) yn.add(truth, text);

    size_t base = 0;
    for (size_t p = 0; p < spec.pipelines.size(); ++p)
        if (spec.pipelines[p].name == spec.baseline) base = p;
    json rows = json::array();
    std::vector<ParetoPoint> quality_points, hallucination_points;
    std::set<std::string> kinds;
    for (const Result& r : results)
        for (const auto& [kind, yn] : r.per_kind) kinds.insert(kind);
    auto total_gmacs = [&](const Result& r) {
        return (r.macs_vision + r.macs_projector + r.macs_prefill + r.macs_decode) / double(r.requests) * 1e-9;
    };
    for (size_t p = 0; p < results.size(); ++p) {
        const Result& r = results[p];
        const double n = double(r.requests);
        const double precision = ratio(double(r.tp), double(r.tp + r.fp)), recall = ratio(double(r.tp), double(r.tp + r.fn));
        std::vector<double> layers;
        for (double v : r.decoder_visual) layers.push_back(v / n);
        json yn = json::object();
        for (const std::string& kind : kinds) {
            const auto it = r.per_kind.find(kind);
            if (it == r.per_kind.end()) continue;
            yn[kind] = {{"accuracy", it->second.accuracy()}, {"precision", it->second.precision()},
                        {"recall", it->second.recall()}, {"f1", it->second.f1()}, {"yes_ratio", it->second.yes_ratio()}};
        }
        json row = {
            {"pipeline", spec.pipelines[p].name},
            {"stages", stages_string(spec.pipelines[p].stages)},
            {"source", spec.pipelines[p].source},
            {"caption_precision", precision},
            {"caption_recall", recall},
            {"caption_f1", precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0},
            {"chair_s", ratio(double(r.captions_hallucinating), double(r.captions))},
            {"chair_i", ratio(double(r.hallucinated), double(r.mentions))},
            {"yesno_accuracy", r.yesno.accuracy()},
            {"yesno_f1", r.yesno.f1()},
            {"yesno_unparsed", r.yesno.unparsed},
            {"yesno_by_negative", yn},
            {"count_accuracy", ratio(double(r.counts_right), double(r.counts))},
            {"visual_tokens", r.visual / n},
            {"decoder_visual_tokens_per_layer", layers},
            {"decoder_visual_tokens", schedule_string(layers)},
            {"exit_layer_mean", r.exits ? json(r.exit_layer_sum / double(r.exits)) : json(nullptr)},
            {"exit_share", r.exits / n},
            {"gmacs",
             {{"vision", r.macs_vision / n * 1e-9},
              {"projector", r.macs_projector / n * 1e-9},
              {"prefill", r.macs_prefill / n * 1e-9},
              {"decode", r.macs_decode / n * 1e-9},
              {"total", total_gmacs(r)}}},
            {"gmacs_ratio", total_gmacs(r) / total_gmacs(results[base])},
            {"ttft_ms_p50", percentile(r.ttft, 50)},
            {"ttft_ms_p90", percentile(r.ttft, 90)},
            {"decode_tokens_per_s", r.decode_ms > 0 ? r.decode_tokens / (r.decode_ms / 1000.0) : 0.0},
        };
        rows.push_back(row);
        quality_points.push_back({spec.pipelines[p].name, total_gmacs(r), row["caption_f1"], p == base});
        hallucination_points.push_back({spec.pipelines[p].name, total_gmacs(r), row["chair_i"], p == base});
    }
    int64_t images = int64_t(groups.size());
    json report = {{"model", spec.model},
                   {"requests", spec.captions.requests},
                   {"images", images},
                   {"requests_run", total_requests},
                   {"max_new_tokens", spec.max_new_tokens},
                   {"baseline", spec.baseline},
                   {"threads", cap.threads()},
                   {"weights", spec.no_mmap ? "read into memory" : "mapped"},
                   {"pipelines", rows}};

    std::ostringstream md;
    md << "# Vision-language report\n\n"
       << "- model: `" << spec.model << "`\n- requests: `" << spec.captions.requests << "` (" << images << " images, "
       << total_requests << " requests: captions, yes/no, counts), greedy, at most " << spec.max_new_tokens
       << " new tokens\n"
       << "- threads: " << cap.threads() << "; one loaded model (weights "
       << (spec.no_mmap ? "read into memory" : "mapped") << "), every image through every pipeline in turn\n"
       << "- caption F1: objects mentioned (vocabulary phrases) against the objects present; CHAIR_s: captions "
          "mentioning an absent object; CHAIR_i: mentions of absent objects / all mentions\n"
       << "- yes/no per negative kind: the positives plus that kind's negatives (POPE)\n"
       << "- GMACs per request, counted by the kernels; TTFT: encoding + prefill + first token (ms, median); "
          "decode tokens/s after the first token\n\n";
    md << "| pipeline | caption F1 | CHAIR_s | CHAIR_i | yes/no acc";
    for (const std::string& k : kinds) md << " | " << k;
    md << " | yes/no F1 | count acc | visual tokens per decoder layer | GMACs vision / proj / prefill / decode | "
          "GMACs total | ratio | TTFT ms | decode tok/s |\n|---|";
    for (size_t i = 0; i < 12 + kinds.size(); ++i) md << "---:|";
    md << "\n";
    for (const json& r : rows) {
        md << "| " << r["pipeline"].get<std::string>() << (r["pipeline"] == spec.baseline ? " (baseline)" : "")
           << " | " << fixed(r["caption_f1"], 3) << " | " << fixed(r["chair_s"], 3) << " | " << fixed(r["chair_i"], 3)
           << " | " << fixed(r["yesno_accuracy"], 3);
        for (const std::string& k : kinds)
            md << " | " << (r["yesno_by_negative"].contains(k) ? fixed(r["yesno_by_negative"][k]["accuracy"], 3) : "-");
        const json& gm = r["gmacs"];
        md << " | " << fixed(r["yesno_f1"], 3) << " | " << fixed(r["count_accuracy"], 3) << " | "
           << r["decoder_visual_tokens"].get<std::string>() << " | " << fixed(gm["vision"], 3) << " / "
           << fixed(gm["projector"], 3) << " / " << fixed(gm["prefill"], 3) << " / " << fixed(gm["decode"], 3) << " | "
           << fixed(gm["total"], 3) << " | " << fixed(r["gmacs_ratio"], 3) << " | " << fixed(r["ttft_ms_p50"], 1)
           << " | " << fixed(r["decode_tokens_per_s"], 1) << " |\n";
    }
    md << "\nDecoder exits (pipelines that remove every visual token part-way):\n\n";
    for (const json& r : rows)
        if (!r["exit_layer_mean"].is_null())
            md << "- `" << r["pipeline"].get<std::string>() << "`: " << fixed(100.0 * r["exit_share"].get<double>(), 1)
               << "% of requests exit, after layer " << fixed(r["exit_layer_mean"], 2) << " on average; prefill "
               << fixed(r["gmacs"]["prefill"], 3) << " GMACs vs " << fixed(rows[base]["gmacs"]["prefill"], 3)
               << " for the baseline\n";
    md << "\nStages:\n\n";
    for (const json& r : rows) md << "- `" << r["pipeline"].get<std::string>() << "`: `" << r["stages"].get<std::string>() << "`\n";
    md << "\n![caption F1 against GMACs](quality-vs-gmacs.png)\n\n![CHAIR_i against GMACs](hallucination-vs-gmacs.png)\n";

    std::ostringstream csv;
    csv << "pipeline,caption_f1,chair_s,chair_i,yesno_accuracy";
    for (const std::string& k : kinds) csv << ",yesno_accuracy_" << k;
    csv << ",yesno_f1,count_accuracy,visual_tokens,decoder_visual_tokens_per_layer,gmacs_vision,gmacs_projector,"
           "gmacs_prefill,gmacs_decode,gmacs_total,gmacs_ratio,ttft_ms_p50,decode_tokens_per_s\n";
    for (const json& r : rows) {
        std::string layers;
        for (const json& t : r["decoder_visual_tokens_per_layer"]) {
            if (!layers.empty()) layers += ' ';  // += only: GCC 12 -Wrestrict false positive on operator+
            layers += fixed(t, 1);
        }
        csv << '"' << r["pipeline"].get<std::string>() << "\"," << fixed(r["caption_f1"], 4) << ','
            << fixed(r["chair_s"], 4) << ',' << fixed(r["chair_i"], 4) << ',' << fixed(r["yesno_accuracy"], 4);
        for (const std::string& k : kinds)
            csv << ',' << (r["yesno_by_negative"].contains(k) ? fixed(r["yesno_by_negative"][k]["accuracy"], 4) : "");
        const json& gm = r["gmacs"];
        csv << ',' << fixed(r["yesno_f1"], 4) << ',' << fixed(r["count_accuracy"], 4) << ','
            << fixed(r["visual_tokens"], 2) << ",\"" << layers << "\"," << fixed(gm["vision"], 6) << ','
            << fixed(gm["projector"], 6) << ',' << fixed(gm["prefill"], 6) << ',' << fixed(gm["decode"], 6) << ','
            << fixed(gm["total"], 6) << ',' << fixed(r["gmacs_ratio"], 6) << ',' << fixed(r["ttft_ms_p50"], 3) << ','
            << fixed(r["decode_tokens_per_s"], 3) << "\n";
    }
    write_text(out_dir + "/report.md", md.str());
    write_text(out_dir + "/report.csv", csv.str());
    write_text(out_dir + "/report.json", report.dump(2) + "\n");
    const std::string what = fs::path(spec.model).filename().string() + ", " + std::to_string(images) + " images";
    report_plot_pareto(quality_points, "caption object F1 vs GMACs per request: " + what,
                       out_dir + "/quality-vs-gmacs.png", "caption F1", true);
    report_plot_pareto(hallucination_points, "CHAIR_i (lower is better) vs GMACs per request: " + what,
                       out_dir + "/hallucination-vs-gmacs.png", "CHAIR_i", false);
    return report;
}

}  // namespace tessera
