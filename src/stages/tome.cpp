#include "stages/tome.h"

#include "tessera/error.h"

namespace tessera {

TomeStage::TomeStage(YamlMap& params) { fail(params.file(), "stage 'tome' is not implemented yet"); }

}  // namespace tessera
