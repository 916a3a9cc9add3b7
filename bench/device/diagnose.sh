#!/bin/bash
# Where the time goes on another machine: oneDNN's own log (ONEDNN_VERBOSE)
# of Tessera's ViT-S forward in f32 and bf16, with oneDNN's default ISA and
# with AMX asked for explicitly, plus the CPU and kernel facts that decide
# which ISA oneDNN may use; the kernels' tests (tessera_thread_tests: the
# oneDNN paths this CPU takes, checked against naive references); and the
# LLaVA-7B decoder's bf16 prefill products (tessera_gemm_bench
# --prefill-bf16, 640 rows: 576 visual tokens and a prompt; 76 rows: VTC-CLS
# 64); and the CPU's f32 multiply-add peak on the same cores
# (tessera_gemm_bench --peak: the ceiling the products' rates are read
# against). Same set-up as run.sh (bench/device/prepare.sh
# first); from the repository root:
#
#   bench/device/diagnose.sh [--cpus 0,1] [--presets "tiny small"] [--isas "default AVX512_CORE_BF16"] [--out DIR]
#
# --isas: oneDNN's default ISA choice ("default") and/or ONEDNN_MAX_CPU_ISA
# values to compare (e.g. AVX512_CORE_BF16: bf16 without AMX).
#   python3 bench/device/verbose_summary.py DIR/*.verbose
set -euo pipefail
cd "$(dirname "$0")/../.."
cpus=0,1 presets=small isas=default out=${OUT:-bench/.cache/device-out}
while [ $# -gt 0 ]; do
    case "$1" in
        --cpus) cpus=$2; shift 2 ;;
        --isas) isas=$2; shift 2 ;;
        --presets) presets=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "diagnose.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
dev=bench/.cache/device
[ -x "$dev/bin/tessera_thread_tests" ] || { echo "diagnose.sh: $dev/bin missing: run bench/device/prepare.sh first" >&2; exit 1; }
work=$(mktemp -d)
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$dev/lib.tar.xz" "$work"
threads=$(awk -F, '{print NF}' <<<"$cpus")
mkdir -p "$out"
{ uname -a; grep -o -w -E 'amx_[a-z0-9]+|avx512_bf16' /proc/cpuinfo | sort | uniq -c || true; } >"$out/host.txt"
run_vit() {  # run_vit OUTPUT [env...]: tessera_vit_bench on $model in $dtype, pinned
    local output=$1
    shift
    env "$@" OMP_NUM_THREADS=$threads LD_LIBRARY_PATH="$work/lib" taskset -c "$cpus" "$dev/bin/tessera_vit_bench" \
        --model "$model" --dtype "$dtype" --threads "$threads" $iters >"$output" 2>&1
}
for preset in $presets; do
    model=$work/$preset
    python3 bench/export_vit_onnx.py make-random --preset "$preset" --out-dir "$model" --onnx "$model.onnx" \
        --threads "$threads" 2>>"$out/export.log"
    for isa in $isas; do
        limit=()
        [ "$isa" = default ] || limit=(ONEDNN_MAX_CPU_ISA=$isa DNNL_MAX_CPU_ISA=$isa)
        for dtype in f32 bf16; do
            iters="--iters 20 --warmup 3"
            run_vit "$out/$preset-$isa-$dtype.json" "${limit[@]}" || echo "diagnose.sh: $preset $isa $dtype failed" >&2
            iters="--iters 3 --warmup 1"
            run_vit "$out/$preset-$isa-$dtype.verbose" "${limit[@]}" ONEDNN_VERBOSE=1 || true
        done
    done
    # PyTorch's own oneDNN on the same model, for comparison (bf16 linear layers).
    OMP_NUM_THREADS=$threads ONEDNN_VERBOSE=1 taskset -c "$cpus" python3 bench/export_vit_onnx.py bench \
        --model "$model" --threads "$threads" --iters 3 --warmup 1 --dtype bf16 >"$out/$preset-pytorch-bf16.verbose" 2>&1 || true
done
LD_LIBRARY_PATH="$work/lib" taskset -c "$cpus" "$dev/bin/tessera_gemm_bench" --peak --threads "$threads" \
    >"$out/peak.jsonl" 2>&1 || echo "diagnose.sh: peak probe failed" >&2
OMP_NUM_THREADS=$threads LD_LIBRARY_PATH="$work/lib" taskset -c "$cpus" "$dev/bin/tessera_thread_tests" \
    >"$out/kernel-tests.txt" 2>&1 || echo "diagnose.sh: kernel tests FAILED (see kernel-tests.txt)" >&2
tail -3 "$out/kernel-tests.txt" >&2
OMP_NUM_THREADS=$threads LD_LIBRARY_PATH="$work/lib" taskset -c "$cpus" "$dev/bin/tessera_gemm_bench" \
    --threads "$threads" --iters 5 --warmup 1 \
    --prefill-bf16 "qkv:640:4096:12288,o:640:4096:4096:residual,gate_up:640:4096:22016,down:640:11008:4096:residual,qkv:76:4096:12288,gate_up:76:4096:22016" \
    >"$out/prefill-bf16.jsonl" 2>&1 || echo "diagnose.sh: prefill bench failed" >&2
rm -rf "$work"
