// `tessera run`: a pipeline over a labelled image folder. Results go to
// OUT/results.jsonl one line per image, appended and flushed as they finish,
// so a run that is killed and restarted skips what is done and repeats
// nothing; OUT/summary.json is rewritten atomically at the end.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/config.h"
#include "tessera/stats.h"

namespace tessera {

struct RunOptions {
    std::string out_dir;
    int threads = 0;        // overrides the config when > 0
    bool progress = false;  // draw a progress bar on stderr
};

// Returns the summary (also written to OUT/summary.json):
// images, top1, top5, gmacs_per_image, ms_p50, ms_p90, images_per_s.
nlohmann::json run_dataset(const RunSpec& spec, const RunOptions& options);

// Summary statistics over the lines of a results.jsonl file.
nlohmann::json run_summarize(const std::string& results_path);


// Writes text to path through path.tmp and a rename, so a reader (or a
// crash) never sees a half-written file.
void write_atomically(const std::string& path, const std::string& text);

}  // namespace tessera
