#include "stages/noop.h"

namespace tessera {

NoopStage::NoopStage(YamlMap& params) {}

}  // namespace tessera
