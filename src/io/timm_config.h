// timm's config.json: the architecture name, model_args (the variant's
// dimensions; optional in hub files, where the name implies them) and
// pretrained_cfg (eval preprocessing).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "io/preprocess.h"

namespace tessera {

struct TimmConfig {
    std::string path;
    std::string architecture;
    int num_classes = 1000;
    std::string global_pool = "token";
    nlohmann::json model_args = nlohmann::json::object();  // as written; empty when absent
    PreprocessConfig preprocess;
};

// Throws tessera::Error "PATH: key 'K': ..." for malformed files and values.
TimmConfig timm_config_read(const std::string& path);

// Typed access to model_args with a default; errors name the file and key.
int json_int(const nlohmann::json& obj, const char* key, int fallback, const std::string& where);
double json_number(const nlohmann::json& obj, const char* key, double fallback, const std::string& where);
bool json_bool(const nlohmann::json& obj, const char* key, bool fallback, const std::string& where);
std::string json_string(const nlohmann::json& obj, const char* key, const std::string& fallback,
                        const std::string& where);

// Parses a whole JSON file, naming the file (and the byte offset) on errors.
nlohmann::json json_read_file(const std::string& path);

}  // namespace tessera
