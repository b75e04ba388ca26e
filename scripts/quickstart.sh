#!/usr/bin/env bash
# Quick start: install what is missing, build, and run hearth on the default model.
# The default model is the small real model in ../shared/models (override with HEARTH_MODEL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
model="${HEARTH_MODEL:-../shared/models/stories260K.gguf}"
if [ ! -f "$model" ]; then
  echo "hearth: no model at $model; generating a small test model instead" >&2
  mkdir -p build/models
  model=build/models/tiny-starcoder.gguf
  [ -f "$model" ] || ./build/src/hearth dev gen-model --shape tiny --vocab starcoder --out "$model"
fi
exec ./build/src/hearth run --model "$model" --prompt "${HEARTH_PROMPT:-Once upon a time}" --max-tokens 64 --verbose
