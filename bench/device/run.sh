#!/bin/bash
# Tessera against ONNX Runtime and PyTorch on another machine (the device
# host: an Intel Xeon with AVX-512, AVX512-BF16 and AMX), pinned to 2 cores
# so the figures compare with the 2-core reference machine and issue 7's
# targets. The machine needs python3 with torch, numpy and onnxruntime; the
# Tessera binaries and their run-time libraries come prepared by
#
#   bench/device/prepare.sh            # here: builds and collects bench/.cache/device
#
# and this script runs there from the repository root:
#
#   bench/device/run.sh [--rounds 3] [--paired-blocks 30] [--cpus 0,1] [--out DIR]
#
# Each round runs every job once, alternating engines: Tessera f32 and bf16
# (tessera_vit_bench; linear layers as this CPU chooses, and f32 forced onto
# the AVX2 packed kernel as "tessera-avx2"), ORT fp32 (bench/ort_bench.py), PyTorch fp32 and bf16
# (bench/export_vit_onnx.py bench), on random ViT-Tiny/16 and ViT-S/16
# models written by export_vit_onnx.py make-random (the identical weights for
# every engine; ORT's logits are checked against PyTorch's first). Then the
# linear-layer microbenchmark (packed kernel vs oneDNN's f32 matmul), and
# ViT-S at batch 16 against oneDNN's matmul rate on its layers, and the
# cores' multiply-add peak (tessera_gemm_bench --peak). Last, the same
# engines on the same models in bench/paired.py's short alternating blocks
# (each engine one long-lived process; ratios between blocks a few hundred
# milliseconds apart, which this host's swings between whole processes
# blur), with the cores' multiply-add rate probed in every block. Every job's JSON goes to DIR/results.jsonl (the paired blocks' raw
# times to DIR/paired-MODEL.json); bench/device/summarize.py makes the
# tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=3 blocks=30 cpus=0,1 out=${OUT:-bench/.cache/device-out}
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --paired-blocks) blocks=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
dev=bench/.cache/device
[ -x "$dev/bin/tessera_vit_bench" ] || { echo "run.sh: $dev/bin missing: run bench/device/prepare.sh first" >&2; exit 1; }
work=$(mktemp -d)
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$dev/lib.tar.xz" "$work"
libs="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
threads=$(awk -F, '{print NF}' <<<"$cpus")
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
lscpu >"$out/lscpu.txt"
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'onnxruntime', onnxruntime.__version__)" \
    >"$out/versions.txt" 2>&1 || echo "run.sh: python3 lacks torch or onnxruntime: those jobs will record errors" >&2

pin() { taskset -c "$cpus" "$@"; }
tessera() { LD_LIBRARY_PATH="$libs" taskset -c "$cpus" "$@"; }  # the carried oneDNN, for Tessera only
record() {  # record ROUND MODEL ENGINE DTYPE -- command...
    local round=$1 model=$2 engine=$3 dtype=$4
    shift 5
    local line
    if line=$(OMP_NUM_THREADS=$threads "$@" 2>"$work/err" | tail -1); then
        printf '{"round":%s,"model":"%s","engine":"%s","dtype":"%s","result":%s}\n' \
            "$round" "$model" "$engine" "$dtype" "$line" >>"$results"
    else
        printf '{"round":%s,"model":"%s","engine":"%s","dtype":"%s","error":%s}\n' \
            "$round" "$model" "$engine" "$dtype" "$(python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()[-2000:]))' <"$work/err")" >>"$results"
    fi
}

for preset in tiny small; do
    python3 bench/export_vit_onnx.py make-random --preset "$preset" --out-dir "$work/$preset" \
        --onnx "$work/$preset.onnx" --threads "$threads" 2>>"$out/export.log"
done

iters=30
for r in $(seq 1 "$rounds"); do
    for preset in tiny small; do
        m="$work/$preset"
        record "$r" "$preset" tessera f32 -- tessera "$dev/bin/tessera_vit_bench" --model "$m" --dtype f32 --threads "$threads" --iters $iters --warmup 5
        record "$r" "$preset" onnxruntime f32 -- pin python3 bench/ort_bench.py --onnx "$m.onnx" --threads "$threads" --iters $iters --warmup 5 --ref "$m.onnx.ref_logits.npy"
        record "$r" "$preset" tessera bf16 -- tessera "$dev/bin/tessera_vit_bench" --model "$m" --dtype bf16 --threads "$threads" --iters $iters --warmup 5
        record "$r" "$preset" tessera-avx2 f32 -- tessera env TESSERA_LINEAR=packed "$dev/bin/tessera_vit_bench" --model "$m" --dtype f32 --threads "$threads" --iters $iters --warmup 5
        record "$r" "$preset" pytorch f32 -- pin python3 bench/export_vit_onnx.py bench --model "$m" --threads "$threads" --iters $iters --warmup 5
        record "$r" "$preset" pytorch bf16 -- pin python3 bench/export_vit_onnx.py bench --model "$m" --threads "$threads" --iters $iters --warmup 5 --dtype bf16
    done
done
# Throughput mode: ViT-S at batch 16 against oneDNN's f32 matmul on the same
# layer shapes (3152 rows; 12 of each per forward).
b16_shapes="qkv:3152:384:1152:none:12,proj:3152:384:384:residual:12,fc1:3152:384:1536:gelu_erf:12,fc2:3152:1536:384:residual:12"
for r in $(seq 1 "$rounds"); do
    record "$r" small-b16 tessera f32 -- tessera "$dev/bin/tessera_vit_bench" --model "$work/small" --dtype f32 --threads "$threads" --batch 16 --iters 3 --warmup 1
    record "$r" layers-b16 gemm f32 -- tessera "$dev/bin/tessera_gemm_bench" --threads "$threads" --iters 5 --warmup 1 --json --shapes "$b16_shapes"
done
record 1 layers gemm f32 -- tessera "$dev/bin/tessera_gemm_bench" --threads "$threads" --iters 100 --json
# The cores' f32 multiply-add peak (the widest vectors the CPU has: the last line).
record 1 peak fma f32 -- tessera "$dev/bin/tessera_gemm_bench" --peak --threads "$threads"
record 1 layers gemm bf16 -- tessera "$dev/bin/tessera_gemm_bench" --threads "$threads" --iters 100 --json --dtype bf16
# Paired blocks: 1 untimed and 5 timed forwards per engine and block.
if [ "$blocks" -gt 0 ]; then
    vit="$dev/bin/tessera_vit_bench"
    for preset in tiny small; do
        m="$work/$preset"
        engines=(
            --engine "tessera-f32=LD_LIBRARY_PATH=$libs taskset -c $cpus $vit --model $m --dtype f32 --threads $threads --serve"
            --engine "tessera-bf16=LD_LIBRARY_PATH=$libs taskset -c $cpus $vit --model $m --dtype bf16 --threads $threads --serve"
            --engine "onnxruntime-f32=taskset -c $cpus python3 bench/ort_bench.py --onnx $m.onnx --threads $threads --ref $m.onnx.ref_logits.npy --serve"
            --engine "pytorch-f32=taskset -c $cpus python3 bench/export_vit_onnx.py bench --model $m --threads $threads --serve"
            --engine "host-fma=LD_LIBRARY_PATH=$libs taskset -c $cpus $dev/bin/tessera_gemm_bench --peak --serve --threads $threads"
        )
        record 0 "$preset" paired mixed -- python3 bench/paired.py --ref onnxruntime-f32 --probe host-fma --blocks "$blocks" \
            --raw "$out/paired-$preset.json" "${engines[@]}"
    done
fi
rm -rf "$work"
echo "run.sh: $(wc -l <"$results") results in $results" >&2
