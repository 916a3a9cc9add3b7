// Placeholder: being written.
#pragma once
#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

class BiformerRoutingStage : public Stage {
public:
    explicit BiformerRoutingStage(YamlMap& params);
    const std::string& name() const override { return name_; }

private:
    std::string name_ = "biformer_routing";
};

}  // namespace tessera
