# Shared helpers for the bench/run-*.sh scripts (source it; it defines variables and functions
# and runs nothing). It uses the same cache layout as bench/run-engine-bench.sh:
#
#   $CACHE                       ~/.cache/hearth (HEARTH_CACHE_DIR, else $XDG_CACHE_HOME/hearth)
#   $LLAMA_COMMIT, $LLAMA_SRC    the llama.cpp commit pinned in cmake/llama.cmake, its cached source
#   $PEER_BUILD                  $CACHE/peer-build-<commit>: llama.cpp's own tools (llama-bench,
#                                llama-server) built from that same source, Release, GGML_NATIVE
#   $MODELS                      $CACHE/bench-models: generated 0.5B-shaped benchmark models
#
# Functions:
#   bench_physical_cores              physical cores (thread-sibling groups), else nproc
#   bench_build_hearth DIR            configure (Release, no tests) and build the hearth target in DIR
#   bench_build_peer TARGET...        build llama.cpp's tools into $PEER_BUILD (no-op when built)
#   bench_gen_model HEARTH OUT SHAPE VOCAB TYPE
#                                     `hearth dev gen-model` into OUT unless it exists
#   bench_free_port                   a free TCP port on 127.0.0.1
#   bench_wait_quiet MAX_LOAD MAX_S   wait until the 1-minute load average is below MAX_LOAD
#                                     (polls every 30 s, at most MAX_S seconds); prints the
#                                     outcome; returns 1 when it never got quiet
#   bench_commit                      short hearth commit, "+dirty" when the tree has changes
#   bench_cpu                         the CPU model name

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${HEARTH_CACHE_DIR:-${XDG_CACHE_HOME:+$XDG_CACHE_HOME/hearth}}
CACHE=${CACHE:-$HOME/.cache/hearth}
LLAMA_COMMIT=$(sed -n 's/^set(HEARTH_LLAMA_COMMIT "\([0-9a-f]*\)")$/\1/p' "$BENCH_ROOT/cmake/llama.cmake")
LLAMA_SRC=$CACHE/llama.cpp-$LLAMA_COMMIT
PEER_BUILD=$CACHE/peer-build-$LLAMA_COMMIT
MODELS=$CACHE/bench-models

bench_physical_cores() {
  local n
  n=$(cat /sys/devices/system/cpu/cpu*/topology/thread_siblings_list 2>/dev/null | sort -u | wc -l)
  [ "$n" -gt 0 ] && echo "$n" || nproc
}

bench_launcher_flags() {
  if command -v ccache >/dev/null; then
    echo "-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
  fi
}

bench_build_hearth() {
  local dir=$1
  cmake -S "$BENCH_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEARTH_BUILD_TESTS=OFF >/dev/null
  cmake --build "$dir" --target hearth hearth_bench_routing
}

bench_build_peer() {
  [ -f "$LLAMA_SRC/.hearth-ok" ] || {
    echo "llama.cpp source missing at $LLAMA_SRC (configuring hearth fetches it)" >&2
    return 1
  }
  # shellcheck disable=SC2046
  cmake -S "$LLAMA_SRC" -B "$PEER_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF $(bench_launcher_flags) >/dev/null
  cmake --build "$PEER_BUILD" --target "$@"
}

bench_gen_model() {
  local hearth=$1 out=$2 shape=$3 vocab=$4 type=$5
  [ -f "$out" ] && return 0
  mkdir -p "$(dirname "$out")"
  echo "== generating $out" >&2
  "$hearth" dev gen-model --shape "$shape" --vocab "$vocab" --type "$type" --out "$out.tmp" >&2
  mv "$out.tmp" "$out"
}

bench_free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

bench_load1() { cut -d' ' -f1 /proc/loadavg; }

bench_wait_quiet() {
  local max_load=$1 max_s=$2 waited=0
  while :; do
    if awk -v l="$(bench_load1)" -v m="$max_load" 'BEGIN { exit !(l < m) }'; then
      echo "== load $(cut -d' ' -f1-3 /proc/loadavg) is below $max_load after ${waited} s" >&2
      return 0
    fi
    if [ "$waited" -ge "$max_s" ]; then
      echo "== WARNING: load $(cut -d' ' -f1-3 /proc/loadavg) still >= $max_load after ${waited} s; measuring anyway" >&2
      return 1
    fi
    sleep 30
    waited=$((waited + 30))
  done
}

bench_commit() {
  local c
  c=$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$BENCH_ROOT" diff --quiet HEAD 2>/dev/null || c="$c+dirty"
  echo "$c"
}

bench_cpu() { sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1; }
