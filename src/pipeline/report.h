// `tessera report`: several pipelines over one model and dataset, compared.
//
//   model: PATH
//   dataset: {images: DIR, labels: FILE.tsv, limit: N}
//   baseline: full              # optional; default: the first pipeline
//   threads: 2                  # optional
//   pipelines:                  # name -> stage list, or a pipeline YAML path
//     full: []
//     evit-0.7: ../pipelines/evit-0.7.yaml
//     tome-r8: [{tome: {r: 8}}]
//
// Each image is decoded once and run through every pipeline in turn, so all
// pipelines are timed under the same conditions. Output: DIR/report.md,
// report.csv, report.json and pareto.png (top-1 against GMACs).
//
// With `task: caption` the model is a LLaVA folder and the dataset a set of
// captioning / QA requests (vlm_report.cpp):
//
//   task: caption
//   dataset: {requests: FILE.jsonl, vocabulary: FILE.json, images: N}
//   max_new_tokens: 80
//   no_mmap: true              # optional: read the weights into memory (caption --no-mmap)
//
// requests.jsonl: {"id", "image" (relative to the file), "prompt", "task":
// "caption" | "yesno" | "count", "answer" (yes/no, or the count's word),
// "negative" (yes/no negatives: random | popular | adversarial), "objects"
// (captions: the objects present, as vocabulary phrases)}. vocabulary.json:
// {"objects": [phrases]}, what a caption's mentions are read from (CHAIR).
// Output: report.md, report.csv, report.json, quality-vs-gmacs.png and
// hallucination-vs-gmacs.png.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pipeline/config.h"

namespace tessera {

struct ReportPipeline {
    std::string name;
    std::vector<StageSpec> stages;
    std::string source;  // "inline" or the pipeline file
};

struct CaptionDatasetSpec {
    std::string requests;    // JSONL of requests (see above)
    std::string vocabulary;  // JSON {"objects": [...]}
    int images = 0;          // the first N images of the file (0 = all)
};

struct ReportSpec {
    std::string file;
    std::string model;
    std::string task = "classify";  // classify | caption
    DatasetSpec dataset;            // classify
    CaptionDatasetSpec captions;    // caption
    int max_new_tokens = 64;        // caption
    bool no_mmap = false;           // caption: weights read into memory instead of mapped
    std::string baseline;
    int threads = 0;
    std::vector<ReportPipeline> pipelines;
};

ReportSpec report_config_read(const std::string& path);

// The pipeline spec of one of a report's pipelines (the report's model and threads).
PipelineSpec report_pipeline_spec(const ReportSpec& spec, const ReportPipeline& pipeline);

// Runs the comparison and writes the outputs; returns report.json's content.
nlohmann::json report_run(const ReportSpec& spec, const std::string& out_dir, bool progress);
// The captioning / QA comparison (task: caption).
nlohmann::json vlm_report_run(const ReportSpec& spec, const std::string& out_dir, bool progress);

// Formatting shared by the reports: v with `digits` decimals; a token
// schedule as run lengths ("197x4 > 140x3"); a stage list as flow YAML; a
// whole file written (errors name it).
std::string fixed(double v, int digits);
std::string schedule_string(const std::vector<double>& tokens);
std::string stages_string(const std::vector<StageSpec>& stages);
void write_text(const std::string& path, const std::string& text);

// What a caption mentions: each vocabulary phrase found in the text (whole
// words, case-insensitive, longest phrase first, no overlaps), in order.
std::vector<std::string> caption_mentions(const std::string& caption, const std::vector<std::string>& vocabulary);

// Renders a quality measure (top-1 by default) against GMACs with the Pareto
// front (OpenCV), as a PNG.
struct ParetoPoint {
    std::string name;
    double gmacs = 0, top1 = 0;  // top1: the plotted measure
    bool baseline = false;
};
void report_plot_pareto(const std::vector<ParetoPoint>& points, const std::string& title, const std::string& path,
                        const std::string& y_label = "top-1 (%)", bool higher_is_better = true);

// Indices of the points on the Pareto front (no other point has both fewer
// GMACs and a better measure), sorted by GMACs.
std::vector<size_t> pareto_front(const std::vector<ParetoPoint>& points, bool higher_is_better = true);

}  // namespace tessera
