#!/usr/bin/env bash
# Installs the Debian 12 packages that quantd's build, tests and benchmarks need.
# Idempotent: packages already installed are skipped and apt is not touched at all
# when nothing is missing. Works as root and through sudo.
set -euo pipefail

PACKAGES=(
  # toolchain
  g++ cmake make pkg-config git
  # service dependencies
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev libeigen3-dev librocksdb-dev prometheus-cpp-dev zlib1g-dev
  # tests and benchmarks (FAISS is the benchmarks' peer only)
  libgtest-dev libgmock-dev libbenchmark-dev libfaiss-dev
  # real data for the walk-through and the benchmarks
  dataset-fashion-mnist
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-deps: missing packages (${missing[*]}) and neither root nor sudo" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
