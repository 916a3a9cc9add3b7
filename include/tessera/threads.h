// Thread count for OpenMP regions and oneDNN (which runs on the same OpenMP
// pool). Precedence: --threads, then OMP_NUM_THREADS, then all cores.
#pragma once

namespace tessera {

// n <= 0 means "from OMP_NUM_THREADS or the core count".
void threads_init(int n);
int threads_count();

}  // namespace tessera
