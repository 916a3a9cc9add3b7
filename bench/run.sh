#!/usr/bin/env bash
# Peer benchmark: Tessera vs ONNX Runtime vs PyTorch on the same ViT weights,
# batch and thread count, in alternating rounds. See bench/README.md.
#
#   bench/run.sh [--threads T] [--iters N] [--batch B] [--rounds R] [--warmup W]
#                [--models tiny,small,large] [--engines tessera,ort,pytorch] [--no-build]
#                [--paired BLOCKS]
#
#   bench/run.sh --suite issue7 [--threads T] [--rounds R] [--iters N] [--warmup W]
#                [--heavy-iters N] [--heavy-warmup W] [--throughput-batch B]
#                [--llava 7b|none|DIR] [--llava-repeat R] [--llava-requests K] [--llava-no-mmap]
#                [--sections LIST] [--paired BLOCKS]
#                [--no-build]
#
# Installs its peers when missing (Debian: python3-torch, libopenblas0-pthread;
# npm: onnxruntime-node into bench/.cache/ort), builds Tessera, exports the
# ONNX models into bench/.cache/models and checks Tessera against PyTorch on
# them, then runs bench/compare.py (table + bench/.cache/results.json),
# with --paired bench/perf_suite.py's paired section (bench/paired.py's short
# alternating blocks, host probe included: table + bench/.cache/paired.json) or,
# with --suite issue7, bench/perf_suite.py (every issue-7 figure: tables +
# bench/.cache/perf.json; see docs/performance.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/bench/.cache"
PY=/usr/bin/python3
ORT_NODE_VERSION="${ORT_NODE_VERSION:-1.30.0}"
VIT_TINY_DIR="${VIT_TINY_DIR:-$ROOT/../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k}"

threads=2 iters=20 batch=1 rounds=5 warmup=5 models=tiny,small engines=tessera,ort,pytorch
build=1 suite="" paired=0 heavy_iters=5 heavy_warmup=2 throughput_batch=16 llava=7b llava_repeat=3
llava_requests=3 llava_no_mmap=0
sections=peers,pruned,bf16,paired,bandwidth,llava
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    --engines) engines="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --paired) paired="$2"; shift 2 ;;
    --suite) suite="$2"; shift 2 ;;
    --heavy-iters) heavy_iters="$2"; shift 2 ;;
    --heavy-warmup) heavy_warmup="$2"; shift 2 ;;
    --throughput-batch) throughput_batch="$2"; shift 2 ;;
    --llava) llava="$2"; shift 2 ;;
    --llava-repeat) llava_repeat="$2"; shift 2 ;;
    --llava-requests) llava_requests="$2"; shift 2 ;;
    --llava-no-mmap) llava_no_mmap=1; shift ;;
    --sections) sections="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
for v in threads iters batch rounds heavy_iters throughput_batch llava_repeat llava_requests; do
  [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || { echo "run.sh: --${v//_/-} must be a positive integer" >&2; exit 2; }
done
for v in warmup heavy_warmup; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "run.sh: --${v//_/-} must be a non-negative integer" >&2; exit 2; }
done
[[ "$paired" =~ ^[0-9]+$ ]] || { echo "run.sh: --paired must be a non-negative integer (blocks)" >&2; exit 2; }
case "$suite" in
  "") ;;
  issue7) engines=tessera,ort,pytorch ;;
  *) echo "run.sh: unknown suite '$suite' (issue7)" >&2; exit 2 ;;
esac
has_section() { [[ ",$sections," == *",$1,"* ]]; }
mkdir -p "$CACHE/models"
log() { echo "[bench] $*" >&2; }

# ---- peers -----------------------------------------------------------------
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_missing=()
for p in python3-numpy python3-torch libopenblas0-pthread; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || apt_missing+=("$p")
done
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)
if [ -n "$suite" ]; then command -v g++ >/dev/null 2>&1 || apt_missing+=(g++); fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  log "installing ${apt_missing[*]}"
  # Update the package lists only when an install from the current ones fails.
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null 2>&1 \
    || { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"; }
fi

ort_pkg="$CACHE/ort/node_modules/onnxruntime-node"
ort_ok() {
  [ -d "$ort_pkg" ] && node -e "
    const p=require('$ort_pkg/package.json'); if (p.version!=='$ORT_NODE_VERSION') process.exit(1);
    require('$ort_pkg');" >/dev/null 2>&1
}
if ! ort_ok; then
  log "installing onnxruntime-node@$ORT_NODE_VERSION into bench/.cache/ort (--ignore-scripts)"
  mkdir -p "$CACHE/ort"
  [ -f "$CACHE/ort/package.json" ] || echo '{"private": true}' > "$CACHE/ort/package.json"
  # --ignore-scripts: the postinstall only fetches optional CUDA/TensorRT files;
  # the CPU library and the N-API binding are inside the npm tarball.
  npm install --prefix "$CACHE/ort" --ignore-scripts --no-audit --no-fund --loglevel=error \
    "onnxruntime-node@$ORT_NODE_VERSION" >&2
  ort_ok || { echo "run.sh: onnxruntime-node does not load after install" >&2; exit 1; }
fi

# ---- Tessera -----------------------------------------------------------------
tessera_bin="$ROOT/build/tessera"
gemm_bin="$ROOT/build/tessera_gemm_bench"
targets=(tessera)
[ -n "$suite" ] && targets+=(tessera_gemm_bench tessera_vit_bench)
[ "$paired" -gt 0 ] && targets+=(tessera_vit_bench tessera_gemm_bench)
tessera_unavailable=""
if [ "$build" -eq 1 ] && [[ ",$engines," == *",tessera,"* ]]; then
  log "building ${targets[*]} (log: bench/.cache/build.log)"
  if ! ( cd "$ROOT" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
         && cmake --build build -j2 --target "${targets[@]}" ) > "$CACHE/build.log" 2>&1; then
    tessera_unavailable="build failed, see bench/.cache/build.log"
    log "Tessera $tessera_unavailable"
  fi
fi
if [ -z "$tessera_unavailable" ] && [ ! -x "$tessera_bin" ]; then
  tessera_unavailable="no binary at build/tessera"
fi
if [ -n "$suite" ] && [ -z "$tessera_unavailable" ] && [ ! -x "$gemm_bin" ]; then
  tessera_unavailable="no binary at build/tessera_gemm_bench"
fi

# The bandwidth probe is the harness's own program, built here.
membw_bin="$CACHE/membw"
if [ -n "$suite" ] && { [ ! -x "$membw_bin" ] || [ "$ROOT/bench/membw.cpp" -nt "$membw_bin" ]; }; then
  log "building bench/membw.cpp"
  g++ -O3 -fopenmp -march=native -o "$membw_bin" "$ROOT/bench/membw.cpp"
fi

# ---- models ------------------------------------------------------------------
# Re-made when missing or older than their inputs or the exporter.
stale() { [ ! -s "$1" ] || [ "$2" -nt "$1" ] || [ "$ROOT/bench/export_vit_onnx.py" -nt "$1" ]; }
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"

# model_dir KEY: sets m_name, m_dir, m_stem (generating random weights when needed).
model_dir() {
  case "$1" in
    tiny)
      m_name=vit_tiny_patch16_224 m_stem=vit_tiny_patch16_224 m_dir="$VIT_TINY_DIR"
      [ -f "$m_dir/model.safetensors" ] || { echo "run.sh: no ViT-Tiny weights at $m_dir (set VIT_TINY_DIR)" >&2; exit 1; } ;;
    small|large)
      if [ "$1" = small ]; then
        m_stem=vit_small_patch16_224 desc="ViT-S/16"
      else
        m_stem=vit_large_patch14_clip_336 desc="CLIP ViT-L/14-336 shapes (1.2 GB)"
      fi
      m_name="$m_stem(random)" m_dir="$CACHE/models/$m_stem.random_seed0"
      if stale "$m_dir/model.safetensors" "$ROOT/bench/export_vit_onnx.py"; then
        log "generating random $desc (seed 0)"
        "$PY" "$ROOT/bench/export_vit_onnx.py" make-random --preset "$1" --out-dir "$m_dir" --seed 0
      fi ;;
    *) echo "run.sh: unknown model '$1' (tiny, small, large)" >&2; exit 2 ;;
  esac
}

# Tessera against PyTorch on one image (export_vit_onnx.py parity), once per
# export and Tessera binary; the result lands in ONNX.parity.json and, when
# they agree, Tessera's outputs next to the ONNX file for ORT's own check.
check_parity() {
  local dir="$1" onnx="$2" out="$2.parity.json"
  [ -z "$tessera_unavailable" ] && [[ ",$engines," == *",tessera,"* ]] || return 0
  if [ -s "$out" ] && [ "$out" -nt "$onnx" ] && [ "$out" -nt "$tessera_bin" ]; then return 0; fi
  log "checking Tessera against PyTorch: $(basename "$onnx")"
  if ! "$PY" "$ROOT/bench/export_vit_onnx.py" parity --model "$dir" --tessera "$tessera_bin" \
       --threads "$threads" --onnx "$onnx" > "$out.tmp"; then
    log "WARNING: Tessera's outputs differ from PyTorch's (or Tessera failed) on $dir; see $out"
  fi
  mv "$out.tmp" "$out"
}

# prepare KEY BATCH: sets m_name, m_dir, m_onnx (exported and checked).
prepare() {
  model_dir "$1"
  m_onnx="$CACHE/models/${m_stem}_b$2.onnx"
  if stale "$m_onnx" "$m_dir/model.safetensors"; then
    log "exporting $m_stem (batch $2)"
    "$PY" "$ROOT/bench/export_vit_onnx.py" export --model "$m_dir" --out "$m_onnx" --batch "$2" --threads "$threads"
  fi
  check_parity "$m_dir" "$m_onnx"
}

if [ -z "$suite" ]; then
  model_args=() paired_args=()
  IFS=, read -r -a model_list <<< "$models"
  for m in "${model_list[@]}"; do
    prepare "$m" "$batch"
    model_args+=(--model "$m_name=$m_dir=$m_onnx")
    paired_args+=(--paired-config "$m_name=$m_dir=$m_onnx=$batch")
  done
  if [ "$paired" -gt 0 ]; then
    [ -z "$tessera_unavailable" ] || { echo "run.sh: --paired needs Tessera: $tessera_unavailable" >&2; exit 1; }
    log "paired blocks: $paired per model, threads=$threads, batch=$batch"
    exec "$PY" "$ROOT/bench/perf_suite.py" --root "$ROOT" --tessera "$tessera_bin" --gemm-bench "$gemm_bin" \
      --membw "$CACHE/membw" --vit-bench "$ROOT/build/tessera_vit_bench" --sections paired \
      --paired-blocks "$paired" "${paired_args[@]}" --engines "$engines" --threads "$threads" \
      --warmup "$warmup" --out "$CACHE/paired.json"
  fi
  log "running $rounds rounds x $iters iterations, threads=$threads, batch=$batch"
  exec "$PY" "$ROOT/bench/compare.py" --root "$ROOT" --tessera "$tessera_bin" \
    --tessera-unavailable "$tessera_unavailable" "${model_args[@]}" \
    --batch "$batch" --threads "$threads" --iters "$iters" --warmup "$warmup" \
    --rounds "$rounds" --engines "$engines" --out "$CACHE/results.json"
fi

# ---- suite issue7 ------------------------------------------------------------
suite_args=()
if has_section peers; then
  for spec in tiny:1 small:1 large:1 "small:$throughput_batch"; do
    prepare "${spec%%:*}" "${spec##*:}"
    suite_args+=(--config "$m_name=$m_dir=$m_onnx=${spec##*:}")
  done
fi
if has_section paired; then  # the light batch-1 models only
  for m in tiny small; do
    prepare "$m" 1
    suite_args+=(--paired-config "$m_name=$m_dir=$m_onnx=1")
  done
fi
if has_section pruned; then
  for m in tiny small; do
    model_dir "$m"
    suite_args+=(--pruned-model "$m_name=$m_dir")
  done
  suite_args+=(--pipeline "evit-0.7=$ROOT/pipelines/evit-0.7.yaml"
               --pipeline "vtc-cls-64=$ROOT/pipelines/vtc-cls-64.yaml")
fi
if has_section bf16; then
  prepare small 1
  suite_args+=(--bf16-model "$m_name=$m_dir=$m_onnx")
fi
case "$llava" in
  7b) llava_dir="$CACHE/llava-1.5-7b-random" ;;  # bench/llava_latency.py writes it when missing
  none) llava_dir=none ;;
  *) llava_dir="$llava" ;;
esac
paired_blocks=30
[ "$paired" -gt 0 ] && paired_blocks=$paired
llava_args=()
if [ "$llava_no_mmap" = 1 ]; then llava_args+=(--llava-no-mmap); fi
log "suite issue7: $sections; $rounds rounds, threads=$threads"
exec "$PY" "$ROOT/bench/perf_suite.py" --root "$ROOT" --tessera "$tessera_bin" \
  --tessera-unavailable "$tessera_unavailable" --gemm-bench "$gemm_bin" --membw "$membw_bin" \
  --vit-bench "$ROOT/build/tessera_vit_bench" --paired-blocks "$paired_blocks" \
  "${suite_args[@]}" --sections "$sections" --threads "$threads" --rounds "$rounds" \
  --iters "$iters" --warmup "$warmup" --heavy-iters "$heavy_iters" --heavy-warmup "$heavy_warmup" \
  --llava "$llava_dir" --llava-repeat "$llava_repeat" --llava-requests "$llava_requests" \
  "${llava_args[@]}" --out "$CACHE/perf.json"
