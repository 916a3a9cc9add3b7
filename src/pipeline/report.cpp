#include "pipeline/report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "io/labels.h"
#include "io/yaml_map.h"
#include "pipeline/runner.h"
#include "tessera/classifier.h"
#include "tessera/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tessera {

std::string fixed(double v, int digits) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return buf;
}

// "197x4 -> 140x3 -> 100x3 -> 72x2": tokens entering each block, run-length.
std::string schedule_string(const std::vector<double>& tokens) {
    std::string out;
    for (size_t i = 0; i < tokens.size();) {
        size_t j = i;
        while (j < tokens.size() && std::abs(tokens[j] - tokens[i]) < 1e-9) ++j;
        const double t = tokens[i];
        out += (out.empty() ? "" : " > ") + (std::floor(t) == t ? std::to_string(int64_t(t)) : fixed(t, 1)) + "x" +
               std::to_string(j - i);
        i = j;
    }
    return out;
}

std::string stages_string(const std::vector<StageSpec>& stages) {
    if (stages.empty()) return "[]";
    std::string out;
    for (const StageSpec& s : stages) {
        YAML::Emitter e;
        e << YAML::Flow << YAML::BeginMap << YAML::Key << s.name << YAML::Value << (s.params && !s.params.IsNull() ? s.params : YAML::Node(YAML::NodeType::Map))
          << YAML::EndMap;
        out += (out.empty() ? "" : ", ") + std::string(e.c_str());
    }
    return "[" + out + "]";
}

void write_text(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!(f << text)) fail(path, "cannot write");
}

ReportSpec report_config_read(const std::string& path) {
    YAML::Node root = yaml_load_file(path);
    YamlMap doc(root, path, "");
    const std::string base = fs::path(path).parent_path().string();
    ReportSpec r;
    r.file = path;
    r.model = config_path(doc.string("model", ""), base);
    if (r.model.empty()) fail(path, "key 'model' is missing");
    r.task = doc.string("task", "classify");
    if (r.task == "classify") {
        r.dataset = dataset_read(doc, base);
    } else if (r.task == "caption") {
        if (!doc.has("dataset")) fail(path, "key 'dataset' is missing (requests: FILE.jsonl, vocabulary: FILE.json)");
        YamlMap ds(doc.node("dataset"), path, "dataset");
        r.captions.requests = config_path(ds.string("requests", ""), base);
        r.captions.vocabulary = config_path(ds.string("vocabulary", ""), base);
        r.captions.images = ds.integer("images", 0, 0, 100000000);
        if (r.captions.requests.empty()) ds.error("requests", "is missing");
        if (r.captions.vocabulary.empty()) ds.error("vocabulary", "is missing");
        ds.finish();
        r.max_new_tokens = doc.integer("max_new_tokens", r.max_new_tokens, 1, 1 << 16);
        r.no_mmap = doc.boolean("no_mmap", false);
    } else {
        doc.error("task", "must be classify or caption, got '" + r.task + "'");
    }
    r.threads = doc.integer("threads", 0, 0, 1024);

    if (!doc.has("pipelines")) fail(path, "key 'pipelines' is missing (name: stage list or pipeline file)");
    YAML::Node list = doc.node("pipelines");
    if (!list.IsMap() || list.size() == 0)
        fail(yaml_where(path, list), "key 'pipelines': expected a mapping of names to stage lists or pipeline files");
    if (list.size() > 32) fail(yaml_where(path, list), "key 'pipelines': at most 32 pipelines");
    for (const auto& kv : list) {
        ReportPipeline p;
        p.name = yaml_key(path, kv.first, "pipelines");
        const std::string key = "pipelines." + p.name;
        if (kv.second.IsScalar()) {
            p.source = config_path(kv.second.Scalar(), base);
            p.stages = pipeline_read(p.source).stages;
        } else if (kv.second.IsSequence() || kv.second.IsNull()) {
            p.source = "inline";
            p.stages = stages_read(kv.second, path, key);
        } else {
            fail(yaml_where(path, kv.second), "key '" + key + "': expected a stage list or a pipeline file");
        }
        r.pipelines.push_back(std::move(p));
    }
    r.baseline = doc.string("baseline", r.pipelines.front().name);
    if (std::none_of(r.pipelines.begin(), r.pipelines.end(), [&](const ReportPipeline& p) { return p.name == r.baseline; }))
        doc.error("baseline", "names no pipeline ('" + r.baseline + "')");
    doc.finish();
    return r;
}

PipelineSpec report_pipeline_spec(const ReportSpec& spec, const ReportPipeline& pipeline) {
    PipelineSpec ps;
    ps.file = spec.file;
    ps.model = spec.model;
    ps.stages = pipeline.stages;
    ps.threads = spec.threads;
    return ps;
}

std::vector<size_t> pareto_front(const std::vector<ParetoPoint>& points, bool higher_is_better) {
    std::vector<size_t> front;
    const double sign = higher_is_better ? 1.0 : -1.0;
    for (size_t i = 0; i < points.size(); ++i) {
        bool dominated = false;
        const double vi = sign * points[i].top1;
        for (size_t j = 0; j < points.size() && !dominated; ++j) {
            const double vj = sign * points[j].top1;
            dominated = j != i && points[j].gmacs <= points[i].gmacs && vj >= vi &&
                        (points[j].gmacs < points[i].gmacs || vj > vi);
        }
        if (!dominated) front.push_back(i);
    }
    std::sort(front.begin(), front.end(), [&](size_t a, size_t b) { return points[a].gmacs < points[b].gmacs; });
    return front;
}

namespace {

// A tick step of 1, 2 or 5 times a power of ten giving about `count` ticks.
double nice_step(double range, int count) {
    const double raw = range / count, mag = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 5.0, 10.0})
        if (m * mag >= raw) return m * mag;
    return 10 * mag;
}


}  // namespace

void report_plot_pareto(const std::vector<ParetoPoint>& points, const std::string& title, const std::string& path,
                        const std::string& y_label, bool higher_is_better) {
    const int width = 1000, height = 640, left = 90, right = 40, top = 60, bottom = 70;
    cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
    double gx0 = 1e300, gx1 = -1e300, ty0 = 1e300, ty1 = -1e300;
    for (const ParetoPoint& p : points) {
        gx0 = std::min(gx0, p.gmacs), gx1 = std::max(gx1, p.gmacs);
        ty0 = std::min(ty0, p.top1), ty1 = std::max(ty1, p.top1);
    }
    const double xpad = std::max(0.05, (gx1 - gx0) * 0.08);
    const double ypad = std::max(higher_is_better && y_label == "top-1 (%)" ? 0.5 : 0.01, (ty1 - ty0) * 0.1);
    gx0 = std::max(0.0, gx0 - xpad), gx1 += xpad, ty0 -= ypad, ty1 += ypad;
    auto px = [&](double g) { return int(left + (g - gx0) / (gx1 - gx0) * (width - left - right)); };
    auto py = [&](double t) { return int(height - bottom - (t - ty0) / (ty1 - ty0) * (height - top - bottom)); };
    const cv::Scalar black(0, 0, 0), grey(220, 220, 220), blue(180, 90, 20), red(40, 40, 220), green(60, 160, 60);
    const int font = cv::FONT_HERSHEY_SIMPLEX;

    const double xs = nice_step(gx1 - gx0, 8), ys = nice_step(ty1 - ty0, 8);
    for (double g = std::ceil(gx0 / xs) * xs; g <= gx1; g += xs) {
        cv::line(img, {px(g), top}, {px(g), height - bottom}, grey, 1);
        cv::putText(img, fixed(g, xs < 0.1 ? 2 : 1), {px(g) - 14, height - bottom + 22}, font, 0.45, black, 1, cv::LINE_AA);
    }
    for (double t = std::ceil(ty0 / ys) * ys; t <= ty1; t += ys) {
        cv::line(img, {left, py(t)}, {width - right, py(t)}, grey, 1);
        cv::putText(img, fixed(t, ys < 0.1 ? 2 : ys < 1 ? 1 : 0), {left - 50, py(t) + 5}, font, 0.45, black, 1, cv::LINE_AA);
    }
    cv::rectangle(img, {left, top}, {width - right, height - bottom}, black, 1);
    cv::putText(img, "GMACs per image", {width / 2 - 70, height - 20}, font, 0.55, black, 1, cv::LINE_AA);
    cv::putText(img, y_label, {10, top - 8}, font, 0.55, black, 1, cv::LINE_AA);
    cv::putText(img, title, {left + 60, 25}, font, 0.6, black, 1, cv::LINE_AA);

    const std::vector<size_t> front = pareto_front(points, higher_is_better);
    for (size_t i = 1; i < front.size(); ++i)
        cv::line(img, {px(points[front[i - 1]].gmacs), py(points[front[i - 1]].top1)},
                 {px(points[front[i]].gmacs), py(points[front[i]].top1)}, green, 2, cv::LINE_AA);
    std::vector<cv::Rect> labels;  // placed so far: a label that would overlap one moves down
    for (const ParetoPoint& p : points) {
        const cv::Point c(px(p.gmacs), py(p.top1));
        cv::circle(img, c, 6, p.baseline ? red : blue, cv::FILLED, cv::LINE_AA);
        const std::string text = p.name + (p.baseline ? " (baseline)" : "");
        int baseline_px = 0;
        const cv::Size size = cv::getTextSize(text, font, 0.45, 1, &baseline_px);
        cv::Rect box(c.x + 9, c.y - 7 - size.height, size.width, size.height + 4);
        for (bool moved = true; moved;) {
            moved = false;
            for (const cv::Rect& other : labels)
                if ((box & other).area() > 0) {
                    box.y = other.y + other.height + 1;
                    moved = true;
                }
        }
        labels.push_back(box);
        cv::putText(img, text, {box.x, box.y + size.height}, font, 0.45, p.baseline ? red : blue, 1, cv::LINE_AA);
    }
    cv::putText(img, std::string("green: Pareto front (no other point has fewer GMACs and a ") +
                         (higher_is_better ? "higher" : "lower") + " value)",
                {left + 10, height - bottom - 10},
                font, 0.42, green, 1, cv::LINE_AA);
    if (!cv::imwrite(path, img)) fail(path, "cannot write the plot");
}

namespace {

struct PipelineResult {
    int top1 = 0, top5 = 0, images = 0;
    double macs = 0;
    std::vector<double> ms;
    std::vector<double> tokens_sum;  // per block, summed over images
};




}  // namespace

json report_run(const ReportSpec& spec, const std::string& out_dir, bool progress) {
    if (spec.task == "caption") return vlm_report_run(spec, out_dir, progress);
    std::vector<Classifier> classifiers;
    for (const ReportPipeline& p : spec.pipelines) classifiers.emplace_back(report_pipeline_spec(spec, p), spec.threads, 1);
    std::vector<LabeledImage> items = dataset_labels_read(spec.dataset.labels, classifiers[0].num_classes());
    if (spec.dataset.limit > 0 && size_t(spec.dataset.limit) < items.size()) items.resize(size_t(spec.dataset.limit));
    fs::create_directories(out_dir);

    std::vector<float> pixels(size_t(classifiers[0].input_floats()));
    // Warm-up: primitives are created and caches filled before anything is timed.
    classifiers[0].load_image(spec.dataset.images + "/" + items[0].image, pixels.data());
    for (Classifier& c : classifiers) c.classify(pixels.data(), 1, 5);

    std::vector<PipelineResult> results(classifiers.size());
    auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < items.size(); ++i) {
        classifiers[0].load_image(spec.dataset.images + "/" + items[i].image, pixels.data());
        for (size_t p = 0; p < classifiers.size(); ++p) {
            const Classification c = classifiers[p].classify(pixels.data(), 1, 5)[0];
            PipelineResult& r = results[p];
            ++r.images;
            for (size_t k = 0; k < c.top.size(); ++k)
                if (c.top[k].class_index == items[i].label) {
                    r.top5 += 1;
                    r.top1 += k == 0;
                }
            r.macs += double(c.macs);
            r.ms.push_back(c.ms);
            r.tokens_sum.resize(c.tokens.size(), 0.0);
            for (size_t b = 0; b < c.tokens.size(); ++b) r.tokens_sum[b] += c.tokens[b];
        }
        if (progress) {
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            std::fprintf(stderr, "\r%zu/%zu images, %zu pipelines, %.0f s", i + 1, items.size(), classifiers.size(), s);
            if (i + 1 == items.size()) std::fputc('\n', stderr);
        }
    }

    size_t base = 0;
    for (size_t p = 0; p < spec.pipelines.size(); ++p)
        if (spec.pipelines[p].name == spec.baseline) base = p;
    auto top1_of = [&](size_t p) { return 100.0 * results[p].top1 / results[p].images; };
    auto gmacs_of = [&](size_t p) { return results[p].macs / results[p].images * 1e-9; };
    auto p50_of = [&](size_t p) { return percentile(results[p].ms, 50); };

    json rows = json::array();
    std::vector<ParetoPoint> points;
    for (size_t p = 0; p < spec.pipelines.size(); ++p) {
        const PipelineResult& r = results[p];
        std::vector<double> tokens(r.tokens_sum.size());
        for (size_t b = 0; b < tokens.size(); ++b) tokens[b] = r.tokens_sum[b] / r.images;
        double ms_mean = 0;
        for (double v : r.ms) ms_mean += v;
        ms_mean /= double(r.ms.size());
        rows.push_back({{"pipeline", spec.pipelines[p].name},
                        {"stages", stages_string(spec.pipelines[p].stages)},
                        {"source", spec.pipelines[p].source},
                        {"top1", top1_of(p)},
                        {"top5", 100.0 * r.top5 / r.images},
                        {"delta_top1", top1_of(p) - top1_of(base)},
                        {"gmacs", gmacs_of(p)},
                        {"gmacs_ratio", gmacs_of(p) / gmacs_of(base)},
                        {"ms_p50", p50_of(p)},
                        {"ms_p90", percentile(r.ms, 90)},
                        {"ms_ratio", p50_of(p) / p50_of(base)},
                        {"images_per_s", 1000.0 / ms_mean},
                        {"tokens_per_block", tokens},
                        {"tokens", schedule_string(tokens)}});
        points.push_back({spec.pipelines[p].name, gmacs_of(p), top1_of(p), p == base});
    }
    json report = {{"model", spec.model},         {"images", items.size()},        {"dataset", spec.dataset.labels},
                   {"baseline", spec.baseline},   {"threads", classifiers[0].threads()}, {"pipelines", rows}};

    // Markdown
    std::ostringstream md;
    md << "# Accuracy / FLOPs report\n\n"
       << "- model: `" << spec.model << "`\n- dataset: `" << spec.dataset.labels << "` (" << items.size() << " images)\n"
       << "- threads: " << classifiers[0].threads() << ", batch 1; every image runs through every pipeline in turn\n"
       << "- GMACs: multiply-accumulates counted by the kernels (matrix products and attention, elementwise work excluded)\n"
       << "- ms: forward pass only (decode and preprocessing excluded), after warm-up; images/s = 1000 / mean ms\n\n"
       << "| pipeline | top-1 | top-5 | Δ top-1 | GMACs | GMACs ratio | ms p50 | ms ratio | images/s | tokens entering blocks |\n"
       << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
    for (const json& r : rows)
        md << "| " << r["pipeline"].get<std::string>() << (r["pipeline"] == spec.baseline ? " (baseline)" : "") << " | "
           << fixed(r["top1"], 2) << " | " << fixed(r["top5"], 2) << " | " << (r["delta_top1"].get<double>() >= 0 ? "+" : "")
           << fixed(r["delta_top1"], 2) << " | " << fixed(r["gmacs"], 4) << " | " << fixed(r["gmacs_ratio"], 3) << " | "
           << fixed(r["ms_p50"], 2) << " | " << fixed(r["ms_ratio"], 3) << " | " << fixed(r["images_per_s"], 1) << " | "
           << r["tokens"].get<std::string>() << " |\n";
    md << "\nStages:\n\n";
    for (const json& r : rows) md << "- `" << r["pipeline"].get<std::string>() << "`: `" << r["stages"].get<std::string>() << "`\n";
    md << "\n![top-1 against GMACs](pareto.png)\n";

    // CSV
    std::ostringstream csv;
    csv << "pipeline,top1,top5,delta_top1,gmacs,gmacs_ratio,ms_p50,ms_p90,ms_ratio,images_per_s,tokens_per_block\n";
    for (const json& r : rows) {
        std::string tokens;
        for (const json& t : r["tokens_per_block"]) {
            if (!tokens.empty()) tokens += ' ';  // += only: GCC 12 -Wrestrict false positive on operator+
            tokens += fixed(t, 1);
        }
        csv << '"' << r["pipeline"].get<std::string>() << "\"," << fixed(r["top1"], 4) << ',' << fixed(r["top5"], 4) << ','
            << fixed(r["delta_top1"], 4) << ',' << fixed(r["gmacs"], 6) << ',' << fixed(r["gmacs_ratio"], 6) << ','
            << fixed(r["ms_p50"], 4) << ',' << fixed(r["ms_p90"], 4) << ',' << fixed(r["ms_ratio"], 4) << ','
            << fixed(r["images_per_s"], 2) << ",\"" << tokens << "\"\n";
    }
    write_text(out_dir + "/report.md", md.str());
    write_text(out_dir + "/report.csv", csv.str());
    write_text(out_dir + "/report.json", report.dump(2) + "\n");
    report_plot_pareto(points, "top-1 vs GMACs: " + fs::path(spec.model).filename().string() + ", " +
                                   std::to_string(items.size()) + " images",
                       out_dir + "/pareto.png");
    return report;
}

}  // namespace tessera
