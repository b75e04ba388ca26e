#!/usr/bin/env bash
# Configures and builds hearth into build/ (Release). The first configure fetches llama.cpp
# from the pinned npm package into ~/.cache/hearth; later ones reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build
