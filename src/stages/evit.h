// Placeholder: being written.
#pragma once
#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

class EvitStage : public Stage {
public:
    explicit EvitStage(YamlMap& params);
    const std::string& name() const override { return name_; }

private:
    std::string name_ = "evit";
};

}  // namespace tessera
