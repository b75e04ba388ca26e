#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test hearth. Idempotent: a
# package already present is not touched, so a second run takes a second.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache git pkg-config openssl
  libboost1.81-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libyaml-cpp-dev
  libvectorscan-dev libcurl4-openssl-dev libsqlite3-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev curl python3
  clang-14 libclang-rt-14-dev   # libFuzzer for the GGUF validator's fuzz target
  chromium                      # renders the bench HTML report in a test
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from elsewhere than Debian (e.g. a preinstalled Node.js).
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  echo "hearth: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
