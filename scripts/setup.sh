#!/usr/bin/env bash
# Installs every Debian package Tessera's build, tests and reference tools need.
# Idempotent: packages already present are left alone.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libdnnl-dev          # matrix multiply primitives
  libopencv-dev        # image resize helpers, report plots
  libstb-dev           # image decoding
  libyaml-cpp-dev      # pipeline / run / report configs
  nlohmann-json3-dev   # config.json, safetensors headers, JSONL output
  libcli11-dev         # command-line parsing
  libsentencepiece-dev # tokenizer.model (LLaMA SentencePiece tokenizers)
  libpcre2-dev         # tokenizer.json split/replace regexes
  libicu-dev           # tokenizer.json Unicode normalization and character classes
  libgtest-dev libgmock-dev
  clang libclang-rt-14-dev libomp-14-dev  # clang builds: fuzz/ targets, the ASan + UBSan suite, TSan (+ Archer) kernels
  python3-numpy python3-pil   # tools/ reference implementation
  python3-sentencepiece       # reference ids in the tokenizer tests
  libopenblas0-pthread        # makes the float64 reference ~15x faster
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup: all ${#packages[@]} packages present"
