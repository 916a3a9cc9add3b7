// Placeholder: being written.
#pragma once
#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

class WindowAttentionStage : public Stage {
public:
    explicit WindowAttentionStage(YamlMap& params);
    const std::string& name() const override { return name_; }

private:
    std::string name_ = "window_attention";
};

}  // namespace tessera
