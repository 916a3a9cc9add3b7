#include "stages/evit.h"

#include "tessera/error.h"

namespace tessera {

EvitStage::EvitStage(YamlMap& params) { fail(params.file(), "stage 'evit' is not implemented yet"); }

}  // namespace tessera
