// Pipeline and run configurations (YAML). A pipeline is a model plus an
// ordered stage list plus run settings; a run adds a dataset and an output.
//
//   model: PATH                # folder with config.json + model.safetensors
//   stages:                    # in order; [] for the plain model
//     - noop: {}
//   threads: 2                 # optional; 0 = OMP_NUM_THREADS or all cores
//   batch: 1                   # optional; images per forward pass
//   dtype: bf16                # optional; weight matrices while running (docs/performance.md)
//
// Relative paths resolve against the YAML file's folder; ${VAR} and
// ${VAR:-default} expand from the environment.
#pragma once
#include <yaml-cpp/yaml.h>

#include <memory>
#include <string>
#include <vector>

#include "tessera/stage.h"

namespace tessera {

struct StageSpec {
    std::string name;
    YAML::Node params;
    std::string file;     // YAML file it came from
    std::string where;    // FILE:LINE
    std::string context;  // key path, e.g. "stages[1].evit"
};

struct PipelineSpec {
    std::string file;
    std::string model;  // resolved folder, or "" when the file names none
    std::vector<StageSpec> stages;
    int threads = 0;
    int batch = 1;
    std::string dtype;       // "" (the command's default), auto, f32, bf16 or f16
    std::string dtype_from;  // where dtype was set (the file, or "--dtype"), for messages
};

struct DatasetSpec {
    std::string images;  // folder of image files
    std::string labels;  // TSV: image, class_index (header line optional)
    int limit = 0;       // 0 = all
};

struct RunSpec {
    PipelineSpec pipeline;
    DatasetSpec dataset;
    std::string class_names;  // TSV of class names, "" = ImageNet-1k
    int top_k = 5;
};

PipelineSpec pipeline_read(const std::string& path);

class YamlMap;
// The pieces run and report configs share.
std::vector<StageSpec> stages_read(const YAML::Node& list, const std::string& file, const std::string& key);
DatasetSpec dataset_read(YamlMap& doc, const std::string& base_dir);
RunSpec run_config_read(const std::string& path);

// Instantiates the stages and checks each against the encoder and, for a
// vision-language model, the decoder (null for image classifiers, which
// refuse decoder stages). Refuses chains in which two stages take the same
// exclusive role (StageRoles), naming both.
std::vector<std::unique_ptr<Stage>> stages_build(const std::vector<StageSpec>& specs, const EncoderShape& shape,
                                                 const DecoderShape* decoder = nullptr);

// ${VAR} / ${VAR:-default} expansion, then resolution against base_dir.
std::string config_path(const std::string& value, const std::string& base_dir);

// A model folder, or a bare model name looked up in $TESSERA_MODELS (':'
// separated), the repository's models/, and the shared models folder.
std::string model_resolve(const std::string& spec);

}  // namespace tessera
