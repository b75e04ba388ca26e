#!/usr/bin/env bash
# Runs every test: installs what is missing, builds, fuzzes the GGUF validator for 30 s,
# runs the engine/model-file tests under AddressSanitizer + UBSan, then the whole suite
# (GoogleTest cases and the node client tests) with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Real client libraries for the HTTP tests (pinned by tests/node/package-lock.json).
if [ -f tests/node/package-lock.json ]; then
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi
bash scripts/build.sh
jobs=$(nproc)
echo "== Fuzzing the GGUF validator (libFuzzer, 30 s, differential against ggml's reader)"
bash scripts/fuzz-gguf.sh 30

echo "== Untrusted-input tests under AddressSanitizer + UBSan (GGUF validation, corrupt model files, text streaming)"
# Release flags for llama.cpp (so ccache reuses its objects); hearth's own code gets -g + sanitizers.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEARTH_SANITIZE=ON >/dev/null
cmake --build build-asan --target hearth_untrusted_tests
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -R 'GgufCheck|Engine.CorruptModel|TextStream|CompleteUtf8'

echo "== All tests (Release): GoogleTest cases and the node client suite"
ctest --test-dir build --output-on-failure -j "$jobs"
