#!/usr/bin/env bash
# Server benchmark: `hearth serve` against llama.cpp's own llama-server, built from the same
# llama.cpp source, with the same HTTP client (bench/server_bench.mjs), one server at a time.
#
#   bench/run-server-bench.sh                    # THREADS=2 CTX=4096 PARALLEL=4 RUNS=5
#   THREADS=2 SUITES=typing bench/run-server-bench.sh
#   ROUTING=1 bench/run-server-bench.sh          # also run bench/routing_bench.mjs first
#                                                # (writes bench/out/routing-<date>.json)
#
# Settings (environment):
#   THREADS=2          -t / --threads for both servers
#   CTX=4096           context per sequence: hearth --ctx CTX, llama-server -c CTX*PARALLEL
#                      (llama-server's -c is the total over its --parallel slots)
#   PARALLEL=4         hearth --parallel, llama-server --parallel
#   RUNS=5 WARMUP=1    single-stream runs; CONC_RUNS=3 runs per concurrency level; STREAMS=2,4
#   STEPS=50           typing workload: /infill requests after the cold one
#   TYPING_CHARS=7600  size of the generated source file (≈ 2,100 deepseek-coder tokens)
#   SUITES=chat,cold,concurrent,typing
#   TYPING_CONFIGS="llama-server llama-server-reuse hearth hearth-noreuse"
#                      llama-server: cache_prompt only (its default --cache-reuse 0);
#                      llama-server-reuse: --cache-reuse 32 (hearth's default);
#                      hearth: its defaults (--cache-reuse 32); hearth-noreuse: --cache-reuse 0
#   CHAT_MODEL         default $MODELS/qwen2.5-coder-0.5b-qwen2-q8_0.gguf (the engine bench's model)
#   FIM_MODEL          default $MODELS/qwen2.5-coder-0.5b-deepseek-coder-q8_0.gguf: the same shape with
#                      the deepseek-coder vocabulary, which has FIM tokens (FIM_VOCAB to change it)
#   QUIET_LOAD=1.5 QUIET_WAIT=1500   wait (polling every 30 s, at most QUIET_WAIT s) for the
#                      1-minute load average to drop below QUIET_LOAD before measuring
#   BUILD=build-sbench hearth's build directory (Release, tests off)
#   NICE=              e.g. -20 (root only), for a machine that other work keeps busy: the script
#                      re-runs itself in a new session (setsid), sets that session's autogroup
#                      niceness (/proc/self/autogroup: with autogroups on, plain `nice` only ranks
#                      tasks within one session) and runs both servers and the client under
#                      `nice -n NICE`. Other work then gets little CPU while it runs. Recorded.
#
# What it does:
#   1. builds hearth (BUILD) and llama-server ($PEER_BUILD, shared with run-engine-bench.sh);
#   2. generates the models once into $MODELS;
#   3. chat model: llama-server, then hearth: suites chat, cold, concurrent;
#   4. FIM model: each TYPING_CONFIGS server in turn: the typing suite;
#   5. writes bench/out/server-<date>.json (flags, load averages, every request) and prints the
#      tables with the ratios (hearth / llama-server).
# llama-server runs as `llama-server -m M -t T -c CTX*P --parallel P --host 127.0.0.1 --port X
# --metrics` (cache_prompt is on by default); for the typing suite also `-b 4096`, because
# llama-server keeps only n_batch/4 - 2 suffix tokens for /infill (510 with the default
# -b 2048), which would cut this file's ~1,000-token suffix and make its prompts shorter than
# hearth's. hearth runs as `hearth serve --port 0 --model bench=M --ctx CTX --parallel P
# --threads T --audit-db <work dir>/audit.db` (its audit log is on and on disk, as by default).
set -euo pipefail
if [ -n "${NICE:-}" ] && [ -z "${BENCH_SESSION:-}" ]; then
  BENCH_SESSION=1 exec setsid -w "$0" "$@"
fi
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/common.sh
. bench/common.sh

THREADS=${THREADS:-2}
CTX=${CTX:-4096}
PARALLEL=${PARALLEL:-4}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
CONC_RUNS=${CONC_RUNS:-3}
STREAMS=${STREAMS:-2,4}
STEPS=${STEPS:-50}
TYPING_CHARS=${TYPING_CHARS:-7600}
N_PREDICT=${N_PREDICT:-128}
SUITES=${SUITES:-chat,cold,concurrent,typing}
TYPING_CONFIGS=${TYPING_CONFIGS:-llama-server llama-server-reuse hearth hearth-noreuse}
QUIET_LOAD=${QUIET_LOAD:-1.5}
QUIET_WAIT=${QUIET_WAIT:-1500}
BUILD=${BUILD:-$ROOT/build-sbench}
FIM_VOCAB=${FIM_VOCAB:-deepseek-coder}
CHAT_MODEL=${CHAT_MODEL:-$MODELS/qwen2.5-coder-0.5b-qwen2-q8_0.gguf}
FIM_MODEL=${FIM_MODEL:-$MODELS/qwen2.5-coder-0.5b-$FIM_VOCAB-q8_0.gguf}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "== building hearth (Release) in $BUILD"
  bench_build_hearth "$BUILD"
  echo "== building llama-server ($LLAMA_COMMIT) in $PEER_BUILD"
  bench_build_peer llama-server
fi
HEARTH=$BUILD/src/hearth
LLAMA_SERVER=$PEER_BUILD/bin/llama-server
[ -x "$HEARTH" ] && [ -x "$LLAMA_SERVER" ] || { echo "missing $HEARTH or $LLAMA_SERVER" >&2; exit 1; }
bench_gen_model "$HEARTH" "$CHAT_MODEL" qwen2.5-coder-0.5b qwen2 q8_0
bench_gen_model "$HEARTH" "$FIM_MODEL" qwen2.5-coder-0.5b "$FIM_VOCAB" q8_0

DATE=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=$ROOT/bench/out
WORK=$OUT/server-$DATE.d
mkdir -p "$WORK"
unset HEARTH_HOST HEARTH_API_KEY HEARTH_POLICY HEARTH_AUDIT_DB
NICE=${NICE:-}
RUN=()
if [ -n "$NICE" ]; then
  RUN=(nice -n "$NICE")
  if [ -w /proc/self/autogroup ]; then
    echo "$NICE" >/proc/$$/autogroup && echo "== $(cat /proc/$$/autogroup)" || true
  fi
fi

SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# start_llama_server NAME MODEL EXTRA_FLAGS... : sets URL, CMD, SERVER_PID
start_llama_server() {
  local name=$1 model=$2
  shift 2
  local port
  port=$(bench_free_port)
  local argv=("$LLAMA_SERVER" -m "$model" -t "$THREADS" -c $((CTX * PARALLEL)) --parallel "$PARALLEL"
    --host 127.0.0.1 --port "$port" --metrics "$@")
  CMD="${RUN[*]}${RUN:+ }${argv[*]}"
  "${RUN[@]}" "${argv[@]}" >"$WORK/$name.log" 2>&1 &
  SERVER_PID=$!
  URL=http://127.0.0.1:$port
  for _ in $(seq 1 600); do
    if curl -sf "$URL/health" >/dev/null 2>&1; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; echo "llama-server exited" >&2; exit 1; }
    sleep 0.2
  done
  echo "llama-server did not become healthy; see $WORK/$name.log" >&2
  exit 1
}

# start_hearth NAME MODEL EXTRA_FLAGS... : sets URL, CMD, SERVER_PID
start_hearth() {
  local name=$1 model=$2
  shift 2
  local argv=("$HEARTH" serve --port 0 --model "bench=$model" --ctx "$CTX" --parallel "$PARALLEL"
    --threads "$THREADS" --audit-db "$WORK/$name-audit.db" "$@")
  CMD="${RUN[*]}${RUN:+ }${argv[*]}"
  "${RUN[@]}" "${argv[@]}" >"$WORK/$name.log" 2>&1 &
  SERVER_PID=$!
  local port=
  for _ in $(seq 1 600); do
    port=$(sed -n 's|^hearth: listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$WORK/$name.log" | head -1)
    [ -n "$port" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; echo "hearth serve exited" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$port" ] || { echo "hearth serve did not start; see $WORK/$name.log" >&2; exit 1; }
  URL=http://127.0.0.1:$port
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  sleep 2  # let the CPU settle before the next server
}

RUN_FILES=()
# measure NAME LABEL BASELINE(0|1) SUITES : runs the client against $URL, records the run
measure() {
  local name=$1 label=$2 baseline=$3 suites=$4
  local load_before
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "== $label: $suites ($CMD), load $load_before"
  "${RUN[@]}" node bench/server_bench.mjs run --url "$URL" --label "$label" --model bench --suites "$suites" \
    --runs "$RUNS" --warmup "$WARMUP" --n-predict "$N_PREDICT" --streams "$STREAMS" --conc-runs "$CONC_RUNS" \
    --steps "$STEPS" --typing-chars "$TYPING_CHARS" --out "$WORK/$name.json"
  LABEL="$label" BASELINE="$baseline" CMD="$CMD" LOAD_BEFORE="$load_before" LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)" \
    node -e '
      const fs = require("fs"); const f = process.argv[1];
      const r = JSON.parse(fs.readFileSync(f, "utf8"));
      Object.assign(r, { command: process.env.CMD, baseline: process.env.BASELINE === "1",
        load_before: process.env.LOAD_BEFORE, load_after: process.env.LOAD_AFTER });
      fs.writeFileSync(f, JSON.stringify(r, null, 1) + "\n");' "$WORK/$name.json"
  RUN_FILES+=("$WORK/$name.json")
}

QUIET=yes
bench_wait_quiet "$QUIET_LOAD" "$QUIET_WAIT" || QUIET=no
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== $DATE: threads $THREADS, ctx/seq $CTX, parallel $PARALLEL, load $LOAD_BEFORE"

if [ "${ROUTING:-0}" = 1 ]; then
  # First, while the machine is quietest: it measures differences of a millisecond.
  echo "== gateway routing overhead (bench/routing_bench.mjs)"
  "${RUN[@]}" node bench/routing_bench.mjs --hearth "$HEARTH" --modes "${ROUTING_MODES:-disk,full,shm,clean}" \
    --out "$OUT/routing-$DATE.json" | tee "$WORK/routing.txt"
fi

CHAT_SUITES=$(echo "$SUITES" | tr ',' '\n' | grep -E '^(chat|cold|concurrent)$' | paste -sd, - || true)
if [ -n "$CHAT_SUITES" ]; then
  start_llama_server llama-server-chat "$CHAT_MODEL"
  measure llama-server-chat llama-server 1 "$CHAT_SUITES"
  stop_server
  start_hearth hearth-chat "$CHAT_MODEL"
  measure hearth-chat hearth 0 "$CHAT_SUITES"
  stop_server
fi

if echo "$SUITES" | tr ',' '\n' | grep -qx typing; then
  for cfg in $TYPING_CONFIGS; do
    case $cfg in
      llama-server) start_llama_server llama-server-typing "$FIM_MODEL" -b 4096
        measure llama-server-typing llama-server 1 typing ;;
      llama-server-reuse) start_llama_server llama-server-reuse-typing "$FIM_MODEL" -b 4096 --cache-reuse 32
        measure llama-server-reuse-typing "llama-server --cache-reuse 32" 0 typing ;;
      hearth) start_hearth hearth-typing "$FIM_MODEL"
        measure hearth-typing hearth 0 typing ;;
      hearth-noreuse) start_hearth hearth-noreuse-typing "$FIM_MODEL" --cache-reuse 0
        measure hearth-noreuse-typing "hearth --cache-reuse 0" 0 typing ;;
      *) echo "unknown typing config '$cfg'" >&2; exit 2 ;;
    esac
    stop_server
  done
fi

RESULT=$OUT/server-$DATE.json
RESULT="$RESULT" DATE="$DATE" HEARTH_COMMIT="$(bench_commit)" LLAMA_COMMIT="$LLAMA_COMMIT" CPU="$(bench_cpu)" NPROC="$(nproc)" \
  THREADS="$THREADS" CTX="$CTX" PARALLEL="$PARALLEL" LOAD_BEFORE="$LOAD_BEFORE" LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)" \
  QUIET="$QUIET" NICE="$NICE" CHAT_MODEL="$CHAT_MODEL" FIM_MODEL="$FIM_MODEL" \
  node -e '
    const fs = require("fs"); const e = process.env;
    const out = { date: e.DATE, hearth_commit: e.HEARTH_COMMIT, llama_commit: e.LLAMA_COMMIT, cpu: e.CPU,
      nproc: Number(e.NPROC), threads: Number(e.THREADS), ctx: Number(e.CTX), parallel: Number(e.PARALLEL),
      load_before: e.LOAD_BEFORE, load_after: e.LOAD_AFTER, quiet: e.QUIET === "yes", nice: e.NICE || null,
      models: { chat: e.CHAT_MODEL, fim: e.FIM_MODEL },
      runs: process.argv.slice(1).map((f) => JSON.parse(fs.readFileSync(f, "utf8"))) };
    fs.writeFileSync(e.RESULT, JSON.stringify(out, null, 1) + "\n");' "${RUN_FILES[@]}"

echo
echo "== results ($RESULT)"
[ "$QUIET" = yes ] || echo "== WARNING: the machine was not quiet (load >= $QUIET_LOAD) when measuring started"
node bench/server_bench.mjs report "$RESULT"

