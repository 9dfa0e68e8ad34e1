#!/usr/bin/env bash
# Build IBM aihwkit 1.2.0 from source into its own venv (.venv-aihwkit), when missing.
# Usage: scripts/build_aihwkit.sh   (from the repository root; about 7 min on 2 cores)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv-aihwkit"
VERSION=1.2.0
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import aihwkit, xbarlab; assert aihwkit.__version__ == '$VERSION'" 2>/dev/null; then
  echo "build_aihwkit: aihwkit $VERSION already in $VENV"; exit 0
fi
# 1. Debian OpenBLAS (pthread variant), when missing and root.
if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "build_aihwkit: libopenblas-dev missing and not root: apt-get install libopenblas-dev" >&2; exit 1; fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev >/dev/null
fi
cfg="$(dpkg -L libopenblas0-pthread libopenblas-pthread-dev 2>/dev/null | grep '/openblas_config.h$' | head -1)"
lib="$(dpkg -L libopenblas0-pthread libopenblas-pthread-dev 2>/dev/null | grep -E '/libopenblas\.so$' | head -1)"
[ -n "$cfg" ] && [ -n "$lib" ] || { echo "build_aihwkit: openblas_config.h or libopenblas.so (pthread) not found" >&2; exit 1; }
export OpenBLAS_HOME="$(dirname "$cfg")"
export OpenBLAS="$(dirname "$lib")"
echo "build_aihwkit: OpenBLAS_HOME=$OpenBLAS_HOME OpenBLAS=$OpenBLAS"
# 2. venv with build deps (torch pinned by constraints.txt) and xbarlab.
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q -c "$ROOT/constraints.txt" torch==2.13.0 pybind11 scikit-build cmake ninja mypy setuptools wheel numpy scipy requests tqdm protobuf
"${PIP[@]}" install -q -c "$ROOT/constraints.txt" -e "$ROOT"
# 3. sdist -> wheel, with the venv's bin on PATH (stubgen).
WORK="$(mktemp -d /tmp/aihwkit-build.XXXXXX)"
# --no-binary aihwkit (not :all:: that would also build setuptools, cmake, ninja, mypy from source in an isolated
# env) and --no-build-isolation (metadata prepared with the build deps installed above).
"${PIP[@]}" download -q --no-binary aihwkit --no-build-isolation --no-deps "aihwkit==$VERSION" -d "$WORK"
export PATH="$VENV/bin:$PATH"
export MAKEFLAGS="-j2" CMAKE_BUILD_PARALLEL_LEVEL=2
"${PIP[@]}" wheel -v --no-build-isolation --no-deps -w "$WORK/wheel" "$WORK"/aihwkit-$VERSION.tar.gz
"${PIP[@]}" install -q -c "$ROOT/constraints.txt" "$WORK"/wheel/aihwkit-*.whl
"$VENV/bin/python" -c "import aihwkit, xbarlab; print('build_aihwkit: aihwkit', aihwkit.__version__, 'ok')"
