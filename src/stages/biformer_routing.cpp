#include "stages/biformer_routing.h"

#include "tessera/error.h"

namespace tessera {

BiformerRoutingStage::BiformerRoutingStage(YamlMap& params) { fail(params.file(), "stage 'biformer_routing' is not implemented yet"); }

}  // namespace tessera
