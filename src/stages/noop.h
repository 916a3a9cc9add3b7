// A stage that does nothing at every hook: the smallest example of the
// interface, and a way to check that a chain adds no cost of its own.
#pragma once
#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

class NoopStage : public Stage {
public:
    explicit NoopStage(YamlMap& params);
    const std::string& name() const override { return name_; }

private:
    std::string name_ = "noop";
};

}  // namespace tessera
