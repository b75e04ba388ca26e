#!/usr/bin/env bash
# Fuzzes the GGUF validator (src/engine/gguf_check.cpp) with libFuzzer.
#
#   scripts/fuzz-gguf.sh [SECONDS]      (default 60)
#
# Builds fuzz/ with clang into build-fuzz/ (ASan + UBSan + libFuzzer; differential against
# ggml's gguf reader unless HEARTH_FUZZ_DIFF=OFF), writes a seed corpus (small generated GGUF
# files plus the first 16 KiB of llama.cpp's bundled vocab files), and runs the fuzzer for
# SECONDS. The working corpus is kept in build-fuzz/corpus between runs. Exits non-zero on a
# finding; the reproducer is written to build-fuzz/artifacts/ (replay it with
# build-fuzz/gguf_check_fuzz FILE).
#
# Needs clang with libFuzzer: on Debian/Ubuntu `apt-get install clang libclang-rt-dev`
# (clang-14 / libclang-rt-14-dev on Debian 12). Environment: FUZZ_JOBS (parallel workers,
# default 1), HEARTH_FUZZ_DIFF (ON/OFF), CC/CXX (clang/clang++).
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS]" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"

pick() {
  for c in "$@"; do
    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  return 1
}
cc="${CC:-$(pick clang clang-14 || true)}"
cxx="${CXX:-$(pick clang++ clang++-14 || true)}"
if [ -z "$cxx" ] || ! "$cxx" --version 2>/dev/null | grep -q clang; then
  echo "fuzz-gguf: clang++ not found (set CXX, or apt-get install clang libclang-rt-dev)" >&2
  exit 2
fi
if [ -z "$cc" ]; then cc="${cxx/clang++/clang}"; fi

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi

llama_args=()
if [ -n "${HEARTH_LLAMA_SOURCE_DIR:-}" ]; then
  llama_args=(-DHEARTH_LLAMA_SOURCE_DIR="$HEARTH_LLAMA_SOURCE_DIR")
elif [ -f "$root/build/CMakeCache.txt" ]; then
  dir="$(sed -n 's/^HEARTH_LLAMA_SOURCE_DIR:PATH=//p' "$root/build/CMakeCache.txt")"
  if [ -n "$dir" ]; then llama_args=(-DHEARTH_LLAMA_SOURCE_DIR="$dir"); fi
fi

cmake -S "$root/fuzz" -B "$build" "${generator[@]}" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DHEARTH_FUZZ_DIFF="${HEARTH_FUZZ_DIFF:-ON}" "${llama_args[@]}" >/dev/null
cmake --build "$build" --target gguf_check_fuzz gguf_make_seeds -- >/dev/null

seeds="$build/seeds"
rm -rf "$seeds"
mkdir -p "$seeds" "$build/corpus" "$build/artifacts"
"$build/gguf_make_seeds" "$seeds"
llama_dir="$(sed -n 's/^HEARTH_LLAMA_SOURCE_DIR:[A-Z]*=//p' "$build/CMakeCache.txt")"
for f in "$llama_dir"/models/ggml-vocab-*.gguf; do
  [ -f "$f" ] || continue
  head -c 16384 "$f" >"$seeds/prefix-$(basename "$f")"
done

jobs="${FUZZ_JOBS:-1}"
args=(
  -max_total_time="$seconds"
  -max_len=65536
  -timeout=10
  -rss_limit_mb=2048
  -print_final_stats=1
  -artifact_prefix="$build/artifacts/"
)
if [ "$jobs" -gt 1 ]; then args+=(-fork="$jobs" -ignore_crashes=0); fi

echo "fuzz-gguf: running $build/gguf_check_fuzz for ${seconds}s (corpus $build/corpus)"
set +e
"$build/gguf_check_fuzz" "${args[@]}" "$build/corpus" "$seeds"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "fuzz-gguf: FINDING (exit $rc); reproducer(s) in $build/artifacts/:" >&2
  ls -1 "$build/artifacts/" >&2 || true
  exit 1
fi
echo "fuzz-gguf: no findings in ${seconds}s"
