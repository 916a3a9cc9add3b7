#include "pipeline/runner.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "io/labels.h"
#include "tessera/classifier.h"
#include "tessera/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tessera {

namespace {

// Reads finished lines; a line cut short by a kill is truncated away so the
// next append starts on a line boundary.
std::vector<json> read_results(const std::string& path) {
    std::vector<json> lines;
    if (!fs::exists(path)) return lines;
    std::ifstream in(path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t complete = text.rfind('\n');
    complete = complete == std::string::npos ? 0 : complete + 1;
    if (complete != text.size()) fs::resize_file(path, complete);
    std::istringstream ss(text.substr(0, complete));
    std::string line;
    for (int line_no = 1; std::getline(ss, line); ++line_no) {
        if (line.empty()) continue;
        try {
            lines.push_back(json::parse(line));
        } catch (const json::exception&) {
            fail(path + ":" + std::to_string(line_no), "not a JSON line; remove the file to start the run again");
        }
    }
    return lines;
}

// Appends whole lines with one write() each; fsync keeps them across power loss.
class LineWriter {
public:
    explicit LineWriter(const std::string& path) : path_(path) {
        fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd_ < 0) fail(path, "cannot open for writing");
    }
    ~LineWriter() {
        if (fd_ >= 0) {
            ::fsync(fd_);
            ::close(fd_);
        }
    }
    void write_line(const std::string& line) {
        std::string buf = line + "\n";
        const char* p = buf.data();
        size_t left = buf.size();
        while (left > 0) {
            ssize_t n = ::write(fd_, p, left);
            if (n < 0) fail(path_, "write failed");
            p += n;
            left -= size_t(n);
        }
    }
    void sync() { ::fsync(fd_); }

private:
    std::string path_;
    int fd_ = -1;
};

// What identifies a run: results from a different model or chain must not be mixed.
json run_identity(const RunSpec& spec) {
    json stages = json::array();
    for (const StageSpec& s : spec.pipeline.stages) {
        YAML::Emitter e;
        e << YAML::Flow << s.params;
        stages.push_back({{"name", s.name}, {"params", std::string(e.c_str())}});
    }
    json identity = {{"model", fs::absolute(spec.pipeline.model).lexically_normal().string()},
                     {"stages", stages},
                     {"labels", fs::absolute(spec.dataset.labels).lexically_normal().string()}};
    // Results in bf16 differ from f32 ones; f32 runs keep their old identity.
    if (spec.pipeline.dtype == "bf16") identity["dtype"] = "bf16";
    return identity;
}

void draw_progress(size_t done, size_t total, double seconds) {
    const int width = 30;
    int filled = total ? int(double(done) / double(total) * width) : width;
    double rate = seconds > 0 ? double(done) / seconds : 0.0;
    std::fprintf(stderr, "\r[%-*s] %zu/%zu  %.1f img/s", width, std::string(size_t(filled), '#').c_str(), done,
                 total, rate);
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
}

}  // namespace

void write_atomically(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        if (!f) fail(tmp, "cannot open for writing");
        f << text;
        if (!f.flush()) fail(tmp, "write failed");
    }
    fs::rename(tmp, path);
}

json run_summarize(const std::string& results_path) {
    std::vector<json> lines = read_results(results_path);
    std::vector<double> ms;
    double macs = 0.0, ms_total = 0.0;
    int top1 = 0, top5 = 0, labelled = 0;
    for (const json& l : lines) {
        ms.push_back(l.at("ms").get<double>());
        ms_total += ms.back();
        macs += l.at("gmacs").get<double>();
        if (l.contains("label") && !l["label"].is_null()) {
            ++labelled;
            const int label = l["label"].get<int>();
            const json& top = l.at("top");
            for (size_t i = 0; i < top.size() && i < 5; ++i)
                if (top[i].at("class").get<int>() == label) {
                    top5 += 1;
                    top1 += i == 0;
                }
        }
    }
    const double n = double(lines.size());
    json s;
    s["images"] = lines.size();
    s["top1"] = labelled ? 100.0 * top1 / labelled : 0.0;
    s["top5"] = labelled ? 100.0 * top5 / labelled : 0.0;
    s["gmacs_per_image"] = n ? macs / n : 0.0;
    s["ms_p50"] = percentile(ms, 50);
    s["ms_p90"] = percentile(ms, 90);
    s["images_per_s"] = ms_total > 0 ? 1000.0 * n / ms_total : 0.0;
    return s;
}

json run_dataset(const RunSpec& spec, const RunOptions& options) {
    Classifier classifier(spec.pipeline, options.threads, 0);
    const std::vector<std::string> names =
        spec.class_names.empty() ? class_names_imagenet() : class_names_read(spec.class_names);
    std::vector<LabeledImage> items = dataset_labels_read(spec.dataset.labels, classifier.num_classes());
    if (spec.dataset.limit > 0 && size_t(spec.dataset.limit) < items.size()) items.resize(size_t(spec.dataset.limit));
    if (!fs::is_directory(spec.dataset.images)) fail(spec.dataset.images, "image folder not found");

    fs::create_directories(options.out_dir);
    const std::string run_path = options.out_dir + "/run.json", results_path = options.out_dir + "/results.jsonl";
    const json identity = run_identity(spec);
    if (fs::exists(run_path)) {
        json previous;
        try {
            previous = json::parse(std::ifstream(run_path));
        } catch (const json::exception&) {
            fail(run_path, "unreadable; remove the output folder to start again");
        }
        if (previous != identity)
            fail(options.out_dir, "holds results of a different run (model, stages, labels or dtype differ); "
                                  "choose another --out or remove it");
    } else {
        write_atomically(run_path, identity.dump(2) + "\n");
    }

    std::set<std::string> done;
    for (const json& l : read_results(results_path)) done.insert(l.at("image").get<std::string>());
    std::vector<LabeledImage> todo;
    for (const LabeledImage& item : items)
        if (!done.count(item.image)) todo.push_back(item);

    LineWriter out(results_path);
    const int batch = classifier.max_batch();
    const int64_t per_image = classifier.input_floats();
    std::vector<float> pixels(size_t(per_image) * size_t(batch));
    auto start = std::chrono::steady_clock::now();
    size_t finished = items.size() - todo.size();
    for (size_t i = 0; i < todo.size(); i += size_t(batch)) {
        const int b = int(std::min(todo.size() - i, size_t(batch)));
        for (int j = 0; j < b; ++j)
            classifier.load_image(spec.dataset.images + "/" + todo[i + size_t(j)].image,
                                  pixels.data() + int64_t(j) * per_image);
        std::vector<Classification> results = classifier.classify(pixels.data(), b, spec.top_k);
        for (int j = 0; j < b; ++j) {
            const LabeledImage& item = todo[i + size_t(j)];
            const Classification& c = results[size_t(j)];
            json top = json::array();
            for (const Prediction& p : c.top)
                top.push_back({{"class", p.class_index},
                               {"label", p.class_index < int(names.size()) ? names[size_t(p.class_index)] : ""},
                               {"prob", p.prob}});
            json line = {{"image", item.image}, {"label", item.label}, {"top", top},
                         {"gmacs", double(c.macs) * 1e-9}, {"ms", c.ms}, {"tokens", c.tokens}};
            out.write_line(line.dump());
        }
        finished += size_t(b);
        if (options.progress)
            draw_progress(finished, items.size(),
                          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    out.sync();
    json summary = run_summarize(results_path);
    summary["dtype"] = classifier.dtype();
    write_atomically(options.out_dir + "/summary.json", summary.dump(2) + "\n");
    return summary;
}

}  // namespace tessera
