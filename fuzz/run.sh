#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each on its
# corpus: fuzz/corpus/<name> plus seeds gathered from the repository (and
# ../shared when present).
#
#   fuzz/run.sh [--seconds S] [--jobs J] [--targets a,b,...] [--build DIR] [--tests]
#
# --seconds 0 only replays the corpora (what CI does). --tests (with
# --seconds 0) makes DIR a plain ASan + UBSan build without coverage
# instrumentation, which a replay does not need, and builds the test suite
# and the CLI there too, for scripts/test.sh's sanitizer run. New inputs
# found go to DIR/corpus/<name>; crashes to DIR/findings/<name>/. Exit status
# 1 when a target found a crash, a leak or a timeout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${TESSERA_SHARED:-$ROOT/../shared}"
seconds=60 jobs=1 build="$ROOT/build-fuzz" tests=OFF
targets=safetensors,safetensors_index,config,pipeline_yaml,image,tokenizer_json,tokenizer_encode,sentencepiece
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --targets) targets="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --tests) tests=ON; shift ;;
    *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
if [ $tests = ON ] && [ "$seconds" != 0 ]; then echo "run.sh: --tests is for replays (--seconds 0)" >&2; exit 2; fi
fuzz=ON; [ $tests = ON ] && fuzz=OFF
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$build" -DTESSERA_FUZZ=$fuzz -DTESSERA_SANITIZE=ON -DTESSERA_TESTS=$tests \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$build.cmake.log" 2>&1 || { cat "$build.cmake.log"; exit 1; }
IFS=, read -ra names <<< "$targets"
cmake --build "$build" -j "$(nproc)" --target $(printf 'fuzz_%s ' "${names[@]}") \
  $([ $tests = ON ] && echo tessera tessera_tests) > "$build.build.log" 2>&1 \
  || { tail -30 "$build.build.log"; exit 1; }

# Extra seeds from the repository and the shared folder (copied per run, not committed).
seeds_for() {
  case "$1" in
    config) ls "$ROOT"/tests/fixtures/llava/*/{config,preprocessor_config,processor_config}.json \
               "$ROOT"/models/*/config.json "$ROOT"/models/*/preprocessor_config.json \
               "$ROOT"/models/shapescenes-towers/*/config.json "$SHARED"/models/*/config.json 2>/dev/null ;;
    pipeline_yaml) ls "$ROOT"/pipelines/*.yaml "$ROOT"/configs/*.yaml 2>/dev/null ;;
    image) ls "$ROOT"/models/samples/*.png "$ROOT"/tests/fixtures/llava/*.{jpg,png} 2>/dev/null
           find "$SHARED"/data/imagenet-val1300/images -size -40k -type f 2>/dev/null | head -8 ;;
    tokenizer_json) ls "$ROOT"/tests/fixtures/llava/*/tokenizer.json "$ROOT"/models/*/tokenizer.json 2>/dev/null ;;
    sentencepiece) ls "$ROOT"/tests/fixtures/llava/*/tokenizer.model 2>/dev/null ;;
    safetensors_index) ls "$ROOT"/tests/fixtures/llava/*/model.safetensors.index.json 2>/dev/null ;;
  esac
}

status=0
for name in "${names[@]}"; do
  seeds="$build/seeds/$name" corpus="$build/corpus/$name" findings="$build/findings/$name"
  rm -rf "$seeds" "$findings"; mkdir -p "$seeds" "$corpus" "$findings"
  cp "$ROOT/fuzz/corpus/$name"/* "$seeds"/ 2>/dev/null || true
  for f in $(seeds_for "$name"); do cp "$f" "$seeds/$(echo "$f" | md5sum | cut -c1-12)-$(basename "$f")"; done
  args=(-rss_limit_mb=4096 -timeout=20 -artifact_prefix="$findings/" -print_final_stats=1)
  # Images: small inputs keep decoding + preprocessing fast enough to explore formats.
  [ "$name" = image ] && args+=(-max_len=40960)
  if [ "$seconds" = 0 ]; then
    args+=(-runs=0)
  else
    args+=(-max_total_time="$seconds" -jobs="$jobs" -workers="$jobs")
  fi
  echo "== fuzz_$name (${seconds}s)"
  if ! ( cd "$findings" && "$build/fuzz/fuzz_$name" "${args[@]}" "$corpus" "$seeds" ) > "$build/$name.log" 2>&1; then
    status=1
  fi
  grep -hE "stat::number_of_executed_units|DONE|ERROR|SUMMARY" "$build/$name.log" "$findings"/fuzz-*.log 2>/dev/null | tail -4 || true
  for f in "$findings"/crash-* "$findings"/leak-* "$findings"/timeout-* "$findings"/oom-*; do
    if [ -e "$f" ]; then echo "finding: $f"; status=1; fi
  done
done
exit $status
