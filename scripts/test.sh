#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite (what CI runs):
#   1. the Release build (g++) and every test;
#   2. the same tests built with clang under AddressSanitizer + UBSan, and
#      every libFuzzer corpus replayed in that build (fuzz/README.md);
#   3. the threaded kernels and the ViT's threaded forward under
#      ThreadSanitizer (tessera_thread_tests, tessera_vit_thread_tests).
# Real weights and images are read from $TESSERA_SHARED or ../shared; tests
# that need them report themselves skipped when neither exists.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
(cd build && ctest --output-on-failure --timeout 900 "$@")

echo "== ASan + UBSan: the test suite, then every fuzz corpus"
# Building the suite here also builds the fuzz targets; the replay comes after.
fuzz/run.sh --seconds 0 --tests --build "$PWD/build-sanitize"
# Every test but the two 1300-image accuracy sweeps (4 min each under ASan;
# their code paths are the image-by-image parity tests', which do run here).
(cd build-sanitize && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --timeout 1800 -E RealVitAccuracy "$@")

echo "== ThreadSanitizer: the threaded kernels and the ViT's threaded forward"
CC=clang CXX=clang++ cmake -S . -B build-tsan -DTESSERA_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-tsan -j"$(nproc)" --target tessera_thread_tests tessera_vit_thread_tests
# Archer tells TSan about OpenMP's barriers; uninstrumented libraries (the
# OpenMP runtime, oneDNN) are ignored, as Archer requires.
# oneDNN's products write where TSan cannot see; the ViT test's held-back
# thread (VitState::region_lag_us) catches what that hides.
archer="$(ls /usr/lib/llvm-*/lib/libarcher.so | sort -V | tail -1)"
for tests in tessera_thread_tests tessera_vit_thread_tests; do
  OMP_TOOL_LIBRARIES="$archer" TSAN_OPTIONS="ignore_noninstrumented_modules=1 halt_on_error=1" \
    OMP_NUM_THREADS=2 "build-tsan/tests/$tests"
done
