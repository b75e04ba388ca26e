#!/usr/bin/env bash
# Quick start: install what is missing, build, and serve the default model on
# http://127.0.0.1:11434 (Ollama's port, so Ollama clients work unchanged).
# The default model is the small real model in ../shared/models (override with HEARTH_MODEL;
# serve a whole directory with HEARTH_MODELS_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
args=()
if [ -n "${HEARTH_MODELS_DIR:-}" ]; then
  args+=(--models-dir "$HEARTH_MODELS_DIR")
else
  model="${HEARTH_MODEL:-../shared/models/stories260K.gguf}"
  if [ ! -f "$model" ]; then
    echo "hearth: no model at $model; generating a small test model instead" >&2
    mkdir -p build/models
    model=build/models/tiny-starcoder.gguf
    [ -f "$model" ] || ./build/src/hearth dev gen-model --shape tiny --vocab starcoder --out "$model"
  fi
  args+=(--model "$model")
fi
exec ./build/src/hearth serve "${args[@]}" "$@"
