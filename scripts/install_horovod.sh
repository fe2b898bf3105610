#!/usr/bin/env bash
# Installs Horovod (the optional `horovod` extra of sparkdl) into a Python environment.
#
#   scripts/install_horovod.sh [PYTHON]      # default: $SPARKDL_VENV/bin/python or .venv/bin/python
#
# Horovod 0.28.1 is source-only on PyPI and does not build against TensorFlow >= 2.19 as is, so
# the wheel is built here once (TensorFlow + Gloo, CPU collectives, no PyTorch/MXNet) and cached
# under $SPARKDL_WHEEL_CACHE (default ~/.cache/sparkdl/wheels), keyed by Python and TensorFlow
# versions because the extension links against that exact libtensorflow_framework. Later calls
# install the cached wheel; a call finding it already installed returns at once without
# importing anything heavy. Horovod's own sources are not modified: newer TensorFlow just needs
# two extra include paths and a one-line header shim for a path XLA moved.
# Set SPARKDL_SKIP_HOROVOD=1 to skip.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${HOROVOD_VERSION:-0.28.1}"
python="${1:-${SPARKDL_VENV:-$root/.venv}/bin/python}"
cache="${SPARKDL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sparkdl/wheels}"

if [ "${SPARKDL_SKIP_HOROVOD:-}" = "1" ]; then
  echo "install_horovod: skipped (SPARKDL_SKIP_HOROVOD=1)" >&2
  exit 0
fi

# Versions from package metadata only: importing TensorFlow takes seconds.
read -r py_tag tf_version hvd_installed < <("$python" - <<'EOF'
import importlib.metadata as m, sys
def v(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return "none"
print(f"cp{sys.version_info[0]}{sys.version_info[1]}", v("tensorflow"), v("horovod"))
EOF
)
if [ "$tf_version" = "none" ]; then
  echo "install_horovod: TensorFlow is not installed in $python; install sparkdl first" >&2
  exit 1
fi
key="horovod-$version-$py_tag-tf$tf_version"
stamp="$(dirname "$python")/../.sparkdl-horovod"
if [ "$hvd_installed" = "$version" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  exit 0
fi

mkdir -p "$cache/$key"
# One build at a time per cache (several checkouts may bootstrap at once).
exec 9>"$cache/$key.lock"
flock 9

wheel="$(ls "$cache/$key"/horovod-*.whl 2>/dev/null | head -n 1 || true)"
if [ -z "$wheel" ]; then
  missing=""
  for tool in cmake make g++; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
  done
  if [ -n "$missing" ] && [ "${CI:-}" = "true" ] && [ "$(id -u)" = "0" ] \
      && command -v apt-get >/dev/null 2>&1; then
    echo "install_horovod: installing build tools (CI):$missing" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake build-essential >/dev/null
    missing=""
  fi
  if [ -n "$missing" ]; then
    echo "install_horovod: building Horovod needs:$missing (Debian/Ubuntu: apt-get install cmake build-essential)" >&2
    exit 1
  fi
  echo "install_horovod: building Horovod $version against TensorFlow $tf_version (once, a few minutes)" >&2
  # --no-build-isolation compiles against the installed TensorFlow, so the build needs the
  # venv's setuptools/wheel plus what Horovod's setup.py imports.
  "$python" -m pip install -q setuptools wheel "packaging" "pyyaml" "cloudpickle" "psutil" "cffi>=1.4.0"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  tf_include="$("$python" -c 'import tensorflow as tf; print(tf.sysconfig.get_include())' 2>/dev/null)"
  # TF >= 2.19 moved the XLA builder header and stopped putting these third-party headers on
  # the include path that tf.sysconfig.get_compile_flags() reports.
  mkdir -p "$work/shim/tensorflow/compiler/xla/client"
  echo '#include "xla/hlo/builder/xla_builder.h"' \
    > "$work/shim/tensorflow/compiler/xla/client/xla_builder.h"
  extra="-I$work/shim -I$tf_include/external/highwayhash -I$tf_include/external/farmhash_archive/src"
  (
    cd "$work"
    export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 \
      HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=gloo \
      MAKEFLAGS="-j${HOROVOD_BUILD_JOBS:-$(nproc)}"
    export CFLAGS="${CFLAGS:-} $extra" CXXFLAGS="${CXXFLAGS:-} $extra"
    "$python" -m pip wheel -v --no-build-isolation --no-deps --no-binary horovod \
      -w "$work/dist" "horovod==$version"
  )
  built="$(ls "$work/dist"/horovod-*.whl)"
  mv "$built" "$cache/$key/"
  wheel="$cache/$key/$(basename "$built")"
  echo "install_horovod: cached $wheel" >&2
fi
"$python" -m pip install -q --force-reinstall --no-deps "$wheel"
# Its dependencies, from the wheel's own metadata (the cache dir serves the wheel itself).
"$python" -m pip install -q --find-links "$cache/$key" "horovod==$version"
echo "$key" > "$stamp"
