// The one oneDNN CPU engine every oneDNN primitive of the kernels runs on.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

namespace tessera {

dnnl::engine& onednn_engine();

}  // namespace tessera
