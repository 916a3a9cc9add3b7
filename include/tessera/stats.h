// Summary statistics of timings, shared by the commands and the benchmarks.
#pragma once
#include <vector>

namespace tessera {

// p-th percentile (0..100) with linear interpolation, as numpy computes it;
// 0 for no values.
double percentile(std::vector<double> values, double p);

}  // namespace tessera
