#!/usr/bin/env bash
# `pip install .` in a fresh virtual environment: the prebuilt labextension and the server
# extension must both be installed into it and show up as enabled, with no `jupyter lab build`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
# --system-site-packages: torch & co. are already installed; the check is about our package.
python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --no-build-isolation .
fail() { echo "check_install: $*"; exit 1; }
[ -f "$venv/share/jupyter/labextensions/jupyter-specgen/package.json" ] \
  || fail "the prebuilt labextension was not installed into the venv"
[ -f "$venv/etc/jupyter/jupyter_server_config.d/jupyter_specgen.json" ] \
  || fail "the server extension's enabling config was not installed into the venv"
# The modules themselves, not `jupyter X`: that would run the system-wide `jupyter-X` script.
labext=$("$venv/bin/python" -m jupyterlab.labextensions list 2>&1)
serverext=$("$venv/bin/python" -m jupyter_server.extension.serverextension list 2>&1)
# The venv's own folders come first in Jupyter's search path, so its entries are listed first.
echo "$labext" | grep -A3 -F "$venv/share/jupyter/labextensions" | grep -E "jupyter-specgen v[0-9.]+ .*enabled.*OK" >/dev/null \
  || { echo "$labext"; fail "jupyter-specgen labextension is not enabled from the venv"; }
echo "$serverext" | grep -A3 -F "$venv/etc/jupyter" | grep -E "jupyter_specgen .*enabled" >/dev/null \
  || { echo "$serverext"; fail "jupyter_specgen server extension is not enabled from the venv"; }
echo "$serverext" | grep -E "jupyter_specgen .*OK" >/dev/null \
  || { echo "$serverext"; fail "jupyter_specgen server extension fails to load"; }
echo "check_install: labextension and server extension enabled after pip install . in a fresh venv"
echo "$labext" | grep -F jupyter-specgen
