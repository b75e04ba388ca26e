#!/usr/bin/env bash
# The example `hearth bench` report in docs/bench/: hearth against llama.cpp's own llama-server,
# both serving the same generated Qwen2.5-Coder-0.5B-shaped Q8_0 model (deepseek-coder
# vocabulary, which has FIM tokens, so autocomplete goes through each server's FIM API:
# hearth's Ollama /api/generate with suffix, llama-server's /infill), side by side, interleaved.
#
#   bench/run-example-report.sh          # RUNS=8 WARMUP=1 THREADS=<physical cores>
#
# Both servers run at once, each with 1 slot (requests go one at a time anyway) and the same
# thread count; between requests they idle. Writes docs/bench/example-report.{html,json} and
# prints the table. Random weights: the token counts are real, the text is not.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/common.sh
source bench/common.sh

THREADS=${THREADS:-$(bench_physical_cores)}
RUNS=${RUNS:-8}
WARMUP=${WARMUP:-1}
CTX=${CTX:-4096}
BUILD=${BUILD:-$ROOT/build-sbench}
OUT=$ROOT/docs/bench
WORK=$(mktemp -d)
mkdir -p "$OUT"

bench_build_hearth "$BUILD" >/dev/null
bench_build_peer llama-server >/dev/null
HEARTH=$BUILD/src/hearth
LLAMA_SERVER=$PEER_BUILD/bin/llama-server
MODEL=$MODELS/qwen2.5-coder-0.5b-deepseek-coder-q8_0.gguf
bench_gen_model "$HEARTH" "$MODEL" qwen2.5-coder-0.5b deepseek-coder q8_0

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# llama-server first, on a port picked now; hearth afterwards on a port of its own choosing
# (started the other way round, the free port picked for llama-server can be the one the
# kernel hands hearth a moment later).
PEER_PORT=$(bench_free_port)
"$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -c "$CTX" --parallel 1 --host 127.0.0.1 --port "$PEER_PORT" \
  >"$WORK/llama-server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PEER_PORT/health" >/dev/null 2>&1 && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$WORK/llama-server.log"; exit 1; }
  sleep 0.2
done
"$HEARTH" serve --port 0 --model "coder=$MODEL" --ctx "$CTX" --parallel 1 --threads "$THREADS" \
  --audit-db "$WORK/audit.db" >"$WORK/hearth.log" 2>&1 &
PIDS+=($!)
HEARTH_PORT=
for _ in $(seq 1 600); do
  HEARTH_PORT=$(sed -n 's|^hearth: listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$WORK/hearth.log" | head -1)
  [ -n "$HEARTH_PORT" ] && break
  kill -0 "${PIDS[1]}" 2>/dev/null || { cat "$WORK/hearth.log"; exit 1; }
  sleep 0.2
done
[ -n "$HEARTH_PORT" ] || { cat "$WORK/hearth.log"; exit 1; }
curl -sf "http://127.0.0.1:$PEER_PORT/health" >/dev/null || { echo "llama-server is not answering"; exit 1; }

echo "== $(date -u +%FT%TZ) hearth $(bench_commit), llama.cpp $LLAMA_COMMIT, $(bench_cpu), threads $THREADS, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$HEARTH" bench \
  --endpoint "hearth=http://127.0.0.1:$HEARTH_PORT" --api ollama --model hearth=coder \
  --endpoint "llama-server=http://127.0.0.1:$PEER_PORT" --api llamacpp \
  --runs "$RUNS" --warmup "$WARMUP" --no-progress \
  --json "$OUT/example-report.json" --html "$OUT/example-report.html"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg); wrote $OUT/example-report.{html,json}"
