// Stage names as written in pipeline YAML, and their factories. Adding a
// method is one file under src/stages/ and one line in registry.cpp.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

// Builds a stage from its YAML settings; unknown names and bad settings are
// errors naming the file, line and key. Calls params.finish().
std::unique_ptr<Stage> stage_create(const std::string& name, YamlMap& params, const std::string& where);
std::vector<std::string> stage_names();

}  // namespace tessera
