#!/usr/bin/env bash
# Engine benchmark: hearth's engine against llama.cpp's own llama-bench, built from the same
# llama.cpp source, on generated Qwen2.5-Coder-0.5B-shaped models (random weights, the real
# qwen2 vocabulary, so sizes match the real model) in Q8_0 and Q4_K_M.
#
#   bench/run-engine-bench.sh            # THREADS=<physical cores> REPS=3
#   THREADS=2 REPS=5 bench/run-engine-bench.sh
#   RT=1 bench/run-engine-bench.sh      # both benchmarks under SCHED_FIFO (chrt -f 10): on a
#                                       # shared machine, builds beside them cannot preempt them
#
# What it does:
#   1. builds hearth and hearth_bench_engine (Release) into build-bench/ (its own build dir,
#      so a developer's build/ is left alone; ccache makes the llama.cpp part cheap);
#   2. builds llama-bench and llama-server from the same cached llama.cpp source into
#      ~/.cache/hearth/peer-build-<commit> (first time ≈ 200 s; then a no-op);
#   3. generates the two models once into ~/.cache/hearth/bench-models/;
#   4. per model, hearth_bench_engine with --llama-bench: llama-bench -m M -t T -p 512 -n 128
#      -r R -o json, hearth's pp512/tg128 with the same T and R, llama-bench again (the two
#      peer runs are pooled, so drift hits both sides), then 1/2/4 concurrent streams with
#      the adaptive and always-batch policies;
#   5. writes bench/out/engine-<date>.json and prints the tables.
# Run it on a quiet machine: the load average before and after each model is recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE=${HEARTH_CACHE_DIR:-${XDG_CACHE_HOME:+$XDG_CACHE_HOME/hearth}}
CACHE=${CACHE:-$HOME/.cache/hearth}
LLAMA_COMMIT=$(sed -n 's/^set(HEARTH_LLAMA_COMMIT "\([0-9a-f]*\)")$/\1/p' cmake/llama.cmake)
LLAMA_SRC=$CACHE/llama.cpp-$LLAMA_COMMIT
PEER_BUILD=$CACHE/peer-build-$LLAMA_COMMIT
MODELS=$CACHE/bench-models
BUILD=$ROOT/build-bench

physical_cores() {
  local n
  n=$(cat /sys/devices/system/cpu/cpu*/topology/thread_siblings_list 2>/dev/null | sort -u | wc -l)
  [ "$n" -gt 0 ] && echo "$n" || nproc
}
THREADS=${THREADS:-$(physical_cores)}
REPS=${REPS:-3}
RUN=()
if [ "${RT:-0}" = 1 ]; then
  chrt -f 10 true 2>/dev/null || { echo "RT=1: chrt -f 10 is not permitted here"; exit 1; }
  RUN=(chrt -f 10)
fi

echo "== building hearth_bench_engine and hearth (Release) in $BUILD"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEARTH_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" --target hearth hearth_bench_engine
HEARTH=$BUILD/src/hearth
BENCH=$BUILD/bench/hearth_bench_engine

echo "== building llama-bench and llama-server ($LLAMA_COMMIT) in $PEER_BUILD"
[ -f "$LLAMA_SRC/.hearth-ok" ] || { echo "llama.cpp source missing at $LLAMA_SRC (the hearth configure fetches it)"; exit 1; }
LAUNCHER=()
if command -v ccache >/dev/null; then
  LAUNCHER=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
cmake -S "$LLAMA_SRC" -B "$PEER_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF "${LAUNCHER[@]}" >/dev/null
cmake --build "$PEER_BUILD" --target llama-bench llama-server
LLAMA_BENCH=$PEER_BUILD/bin/llama-bench

mkdir -p "$MODELS"
NAMES=(q8_0 q4_k_m)
for t in "${NAMES[@]}"; do
  m=$MODELS/qwen2.5-coder-0.5b-qwen2-$t.gguf
  if [ ! -f "$m" ]; then
    echo "== generating $m"
    "$HEARTH" dev gen-model --shape qwen2.5-coder-0.5b --vocab qwen2 --type "$t" --out "$m"
  fi
done

DATE=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=$ROOT/bench/out
WORK=$OUT/engine-$DATE.d
mkdir -p "$WORK"
HEARTH_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || HEARTH_COMMIT="$HEARTH_COMMIT+dirty"
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "== $DATE: threads $THREADS, reps $REPS, ${RUN[*]:-normal priority}, load $(cut -d' ' -f1-3 /proc/loadavg)"

RUNS=()
for t in "${NAMES[@]}"; do
  m=$MODELS/qwen2.5-coder-0.5b-qwen2-$t.gguf
  echo "== $t"
  "${RUN[@]}" "$BENCH" --model "$m" --threads "$THREADS" --reps "$REPS" --pp 512 --tg 128 --streams 1,2,4 \
    --policies adaptive,always --llama-bench "$LLAMA_BENCH" --json "$WORK/hearth-$t.json"
  RUNS+=("$WORK/hearth-$t.json")
done

RESULT=$OUT/engine-$DATE.json
{
  printf '{\n"date": "%s",\n"hearth_commit": "%s",\n"llama_commit": "%s",\n' "$DATE" "$HEARTH_COMMIT" "$LLAMA_COMMIT"
  printf '"cpu": "%s",\n"threads": %d,\n"reps": %d,\n"realtime": %s,\n"runs": [\n' "$CPU" "$THREADS" "$REPS" "$([ ${#RUN[@]} -gt 0 ] && echo true || echo false)"
  sep=""
  for f in "${RUNS[@]}"; do printf '%s' "$sep"; cat "$f"; sep=","; done
  printf ']\n}\n'
} >"$RESULT"
echo
echo "== results ($RESULT)"
"$BENCH" --summarize "$RESULT"
