#!/usr/bin/env bash
# Installs the Debian packages that moe-opt needs, when they are missing.
# Each dependency and why it is there is listed in README.md.
set -euo pipefail

packages=(
  cmake ninja-build lld ccache g++          # build
  libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools libzstd-dev  # MLIR 22
  libgtest-dev                              # C++ unit tests
  python3-numpy                             # independent test oracles
  libboost-context-dev                      # fibers of the CPU emulation of kernels
  pybind11-dev python3-dev                  # the Python module moe_opt
  python3-pip python3-setuptools python3-wheel python3-venv  # pip install . / pip wheel . (pyproject.toml)
  libglpk-dev                               # ILP of the affinity expert placement
  coinor-libcbc-dev                         # the same ILP with CBC (solver=cbc)
  liblapacke-dev                            # SVD of --moe-compress-experts, the affinity eigenvalue bound
  python3-torch                             # moe_opt.torch, torch.distributed of the EP runner
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
