#!/usr/bin/env bash
# Peer benchmark: Tessera vs ONNX Runtime vs PyTorch on the same ViT weights,
# batch and thread count, in alternating rounds. See bench/README.md.
#
#   bench/run.sh [--threads T] [--iters N] [--batch B] [--rounds R] [--warmup W]
#                [--models tiny,small] [--engines tessera,ort,pytorch] [--no-build]
#
# Installs its peers when missing (Debian: python3-torch, libopenblas0-pthread;
# npm: onnxruntime-node into bench/.cache/ort), builds Tessera, exports the
# ONNX models into bench/.cache/models, then runs bench/compare.py, which
# prints the table and writes bench/.cache/results.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/bench/.cache"
PY=/usr/bin/python3
ORT_NODE_VERSION="${ORT_NODE_VERSION:-1.30.0}"
VIT_TINY_DIR="${VIT_TINY_DIR:-$ROOT/../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k}"

threads=2 iters=20 batch=1 rounds=5 warmup=5 models=tiny,small engines=tessera,ort,pytorch
build=1
usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
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
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
for v in threads iters batch rounds warmup; do
  [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || { echo "run.sh: --$v must be a positive integer" >&2; exit 2; }
done
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
tessera_unavailable=""
if [ "$build" -eq 1 ] && [[ ",$engines," == *",tessera,"* ]]; then
  log "building Tessera (log: bench/.cache/build.log)"
  if ! ( cd "$ROOT" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
         && cmake --build build -j2 --target tessera ) > "$CACHE/build.log" 2>&1; then
    tessera_unavailable="build failed, see bench/.cache/build.log"
    log "Tessera $tessera_unavailable"
  fi
fi
if [ -z "$tessera_unavailable" ] && [ ! -x "$tessera_bin" ]; then
  tessera_unavailable="no binary at build/tessera"
fi

# ---- models ------------------------------------------------------------------
# Re-export when the .onnx is missing or older than its weights or the exporter.
stale() { [ ! -s "$1" ] || [ "$2" -nt "$1" ] || [ "$ROOT/bench/export_vit_onnx.py" -nt "$1" ]; }
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
model_args=()
IFS=, read -r -a model_list <<< "$models"
for m in "${model_list[@]}"; do
  case "$m" in
    tiny)
      dir="$VIT_TINY_DIR"
      [ -f "$dir/model.safetensors" ] || { echo "run.sh: no ViT-Tiny weights at $dir (set VIT_TINY_DIR)" >&2; exit 1; }
      onnx="$CACHE/models/vit_tiny_patch16_224_b$batch.onnx"
      if stale "$onnx" "$dir/model.safetensors"; then
        log "exporting ViT-Tiny (batch $batch)"
        "$PY" "$ROOT/bench/export_vit_onnx.py" export --model "$dir" --out "$onnx" --batch "$batch" --threads "$threads"
      fi
      model_args+=(--model "vit_tiny_patch16_224=$dir=$onnx") ;;
    small)
      dir="$CACHE/models/vit_small_patch16_224.random_seed0"
      onnx="$CACHE/models/vit_small_patch16_224_b$batch.onnx"
      if stale "$dir/model.safetensors" "$ROOT/bench/export_vit_onnx.py"; then
        log "generating random ViT-S/16 (seed 0)"
        "$PY" "$ROOT/bench/export_vit_onnx.py" make-random --out-dir "$dir" --seed 0
      fi
      if stale "$onnx" "$dir/model.safetensors"; then
        log "exporting ViT-S/16 (batch $batch)"
        "$PY" "$ROOT/bench/export_vit_onnx.py" export --model "$dir" --out "$onnx" --batch "$batch" --threads "$threads"
      fi
      model_args+=(--model "vit_small_patch16_224(random)=$dir=$onnx") ;;
    *) echo "run.sh: unknown model '$m' (tiny, small)" >&2; exit 2 ;;
  esac
done

# ---- rounds ------------------------------------------------------------------
log "running $rounds rounds x $iters iterations, threads=$threads, batch=$batch"
exec "$PY" "$ROOT/bench/compare.py" --root "$ROOT" --tessera "$tessera_bin" \
  --tessera-unavailable "$tessera_unavailable" "${model_args[@]}" \
  --batch "$batch" --threads "$threads" --iters "$iters" --warmup "$warmup" \
  --rounds "$rounds" --engines "$engines" --out "$CACHE/results.json"
