#!/usr/bin/env bash
# Build the benchmark-only venv holding the REFERENCE implementation `lems==0.1.1` (PyPI, CC BY-NC-SA 4.0).
#
# The reference is installed here ONLY to time it against lems-tfx on the same machine; no project code imports it
# (the benchmark scripts drive it in a separate subprocess with this venv's python). Same backend and versions as
# the project venv: Python 3.10, tensorflow 2.16.2, keras 3.12.4, numpy 1.26.4 (pins from ../constraints.txt).
# lems 0.1.1 requires tkan>=0.4.3, which pins newer numpy/keras than TF 2.16 allows, so lems, tkan 0.4.3 and
# keras_efficient_kan 0.1.10 are installed with --no-deps on top of the pinned stack (they import fine on it).
#
# Usage: benchmarks/setup_reference_venv.sh [python3.10]     -> benchmarks/.venv-ref/ (git-ignored, ~1.5 GB)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv-ref"
py="${1:-}"
if [ -z "$py" ]; then
  for c in python3.10 "$(command -v pyenv >/dev/null 2>&1 && echo "$(pyenv root)/versions/3.10.13/bin/python3.10")" \
           "$HOME/.pyenv/versions/3.10.13/bin/python3.10" /usr/bin/python3.10 /usr/local/bin/python3.10; do
    if [ -n "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then py="$c"; break; fi
  done
fi
[ -n "$py" ] || { echo "error: no Python 3.10 found; pass one: $0 /path/to/python3.10" >&2; exit 1; }

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade "pip<25" setuptools wheel
# The pinned backend, identical to the project venv (versions taken from constraints.txt).
"$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" \
  tensorflow==2.16.2 keras==3.12.4 numpy==1.26.4 pandas==1.5.3 pyarrow==10.0.1 psutil
# The reference and its model-only dependencies, without letting them move the pins.
"$venv/bin/python" -m pip install --quiet --no-deps lems==0.1.1 tkan==0.4.3 keras_efficient_kan==0.1.10
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
import tensorflow as tf, keras, numpy
import lems.models, lems.loss, lems.data_formater  # noqa: F401  (must import on the pinned stack)
print("reference venv ok:", {p: md.version(p) for p in
      ["tensorflow", "keras", "numpy", "pandas", "lems", "tkan", "keras_efficient_kan"]})
PY
