#!/bin/bash
# Builds the two benchmark binaries that bench/device/run.sh runs on another
# machine, and the kernels' tests (bench/device/diagnose.sh runs them there),
# and copies, next to them, the shared libraries they load that a
# host without Tessera's Debian packages lacks (oneDNN and what it loads).
# The C and C++ runtimes and OpenMP are the host's own: newer versions of
# them run binaries built against older ones.
#
#   bench/device/prepare.sh [--march ARCH] [BUILD_DIR]   -> bench/.cache/device/{bin/,lib.tar.xz}
#
# --march builds for the other machine's CPU (e.g. sapphirerapids) in its own
# build directory (default build-ARCH) instead of for this one's: what a user
# building there gets from -march=native (Tessera's own kernels compiled
# with AVX-512 where it has it), where BUILD_DIR (default build) holds this
# machine's build.
#
# The libraries travel xz-compressed (oneDNN is 40 MB, 7 MB compressed);
# run.sh unpacks them.
set -euo pipefail
cd "$(dirname "$0")/../.."
march=""
if [ "${1:-}" = --march ]; then
    march=$2
    shift 2
fi
build=${1:-build${march:+-$march}}
if [ -n "$march" ] && [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTESSERA_NATIVE=OFF -DCMAKE_CXX_FLAGS="-march=$march" >/dev/null
fi
cmake --build "$build" --target tessera_vit_bench tessera_gemm_bench tessera_thread_tests -j"$(nproc)" >/dev/null
dev=bench/.cache/device
rm -rf "$dev"
mkdir -p "$dev/bin" "$dev/lib"
trap 'rm -rf "$dev/lib"' EXIT
cp "$build/tessera_vit_bench" "$build/tessera_gemm_bench" "$build/tests/tessera_thread_tests" "$dev/bin/"
for bin in "$dev"/bin/*; do
    ldd "$bin" | awk '$3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so.*|libm.so.*|ld-linux*|libpthread.so.*|libdl.so.*|librt.so.*) ;;  # the host's own
        libstdc++.so.*|libgcc_s.so.*|libgomp.so.*) ;;
        *) cp -L "$lib" "$dev/lib/" ;;
    esac
done
ls "$dev/lib"
tar -C "$dev" -cJf "$dev/lib.tar.xz" lib
du -sh "$dev"
