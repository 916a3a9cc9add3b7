#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite (what CI runs).
# Real weights and images are read from $TESSERA_SHARED or ../shared; tests
# that need them report themselves skipped when neither exists.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
(cd build && ctest --output-on-failure --timeout 900 "$@")
# Every libFuzzer target replays its corpus under ASan + UBSan (fuzz/README.md).
fuzz/run.sh --seconds 0
