// Placeholder: being written.
#pragma once
#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

class TomeStage : public Stage {
public:
    explicit TomeStage(YamlMap& params);
    const std::string& name() const override { return name_; }

private:
    std::string name_ = "tome";
};

}  // namespace tessera
