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

struct ReportSpec {
    std::string file;
    std::string model;
    DatasetSpec dataset;
    std::string baseline;
    int threads = 0;
    std::vector<ReportPipeline> pipelines;
};

ReportSpec report_config_read(const std::string& path);

// Runs the comparison and writes the outputs; returns report.json's content.
nlohmann::json report_run(const ReportSpec& spec, const std::string& out_dir, bool progress);

// Renders top-1 against GMACs with the Pareto front (OpenCV), as a PNG.
struct ParetoPoint {
    std::string name;
    double gmacs = 0, top1 = 0;
    bool baseline = false;
};
void report_plot_pareto(const std::vector<ParetoPoint>& points, const std::string& title, const std::string& path);

// Indices of the points on the Pareto front (no other point has both fewer
// GMACs and a higher top-1), sorted by GMACs.
std::vector<size_t> pareto_front(const std::vector<ParetoPoint>& points);

}  // namespace tessera
