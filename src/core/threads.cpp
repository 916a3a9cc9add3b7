#include "tessera/threads.h"

#include <omp.h>

#include <cstdlib>

namespace tessera {

void threads_init(int n) {
    if (n <= 0) {
        const char* env = std::getenv("OMP_NUM_THREADS");
        n = env ? std::atoi(env) : 0;
        if (n <= 0) n = omp_get_num_procs();
    }
    omp_set_num_threads(n);
}

int threads_count() { return omp_get_max_threads(); }

}  // namespace tessera
