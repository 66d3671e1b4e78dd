#!/usr/bin/env bash
# Installs the Debian 12 packages quantd needs. Idempotent: packages already installed are
# skipped and apt is not touched at all when nothing is missing. Works as root and via sudo.
#
#   deploy/install-deps.sh [all|build|runtime]
#     all      build + tests + benchmarks + the Fashion-MNIST data set (default; make run/test)
#     build    what compiling quantd and quantctl needs (the Docker build stage)
#     runtime  the shared libraries the binaries load (the Docker runtime stage)
set -euo pipefail

profile="${1:-all}"
RUNTIME=(libgrpc++1.51 libprotobuf32 librocksdb7.8 libssl3 libprometheus-cpp-pull1.0
         libprometheus-cpp-core1.0 libabsl20220623 zlib1g libhwy1)
BUILD=(g++ cmake make pkg-config
       libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
       libabsl-dev libeigen3-dev libhwy-dev librocksdb-dev libssl-dev prometheus-cpp-dev zlib1g-dev)
# Tests and benchmarks; FAISS is the benchmarks' peer only, never a service dependency.
# promtool (package prometheus) checks the metrics exposition; openssl makes test certificates;
# python3-yaml parses the Kubernetes manifests in a test.
EXTRA=(git libgtest-dev libgmock-dev libbenchmark-dev libfaiss-dev libopenblas0-pthread dataset-fashion-mnist python3-numpy
       prometheus openssl python3 python3-yaml)

case "$profile" in
  all) PACKAGES=("${BUILD[@]}" "${EXTRA[@]}") ;;
  build) PACKAGES=("${BUILD[@]}") ;;
  runtime) PACKAGES=("${RUNTIME[@]}") ;;
  *) echo "usage: $0 [all|build|runtime]" >&2; exit 2 ;;
esac

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages of profile '$profile' present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-deps: missing ${missing[*]}; run as root or install sudo" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
