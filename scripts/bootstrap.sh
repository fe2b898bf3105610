#!/usr/bin/env bash
# Creates or reuses .venv and installs sparkdl with its test extra, plus Horovod (the optional
# `horovod` extra, built once by scripts/install_horovod.sh and cached). Idempotent and quick
# when nothing changed: the install is redone only when setup.py changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${SPARKDL_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

java_major() {
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.[0-9]*\)*.*".*/\1/p' | head -n 1
}
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  if [ "${CI:-}" = "true" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: Java >= 17 missing; installing openjdk-17-jre-headless (CI)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    echo "bootstrap: Spark 4 needs Java 17 or newer, and 'java' was not found or is older." >&2
    echo "  Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless" >&2
    echo "  macOS:         brew install openjdk@17" >&2
    exit 1
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
fi
stamp="$venv/.sparkdl-installed"
want="$(cat setup.py | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$venv/bin/python" -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi

# Horovod is source-only on PyPI: the first run builds it (minutes), later runs reuse it.
# Optional outside CI: without it HorovodRunner uses its TensorFlow backend and the
# Horovod-backend tests are skipped. SPARKDL_SKIP_HOROVOD=1 skips it.
if ! scripts/install_horovod.sh "$venv/bin/python"; then
  if [ "${CI:-}" = "true" ]; then
    exit 1
  fi
  echo "bootstrap: Horovod could not be installed (see above); continuing without it." >&2
fi
