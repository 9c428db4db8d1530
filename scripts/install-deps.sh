#!/usr/bin/env bash
# Installs the Debian 12 packages zbroker needs to build, test and benchmark. Idempotent:
# apt runs only when a package is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libboost-dev
  libcli11-dev libspdlog-dev nlohmann-json3-dev prometheus-cpp-dev catch2
  python3 python3-zmq python3-msgpack python3-venv python3-wheel
  clang libclang-rt-14-dev dpkg-dev
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done

if ((${#missing[@]} > 0)); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "Installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
