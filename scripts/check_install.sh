#!/usr/bin/env bash
# `pip install .` in a fresh virtual environment: the prebuilt labextension and the server
# extension must both show up as enabled, with no `jupyter lab build`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
# --system-site-packages: torch & co. are already installed; the check is about our package.
python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --no-build-isolation .
labext=$("$venv/bin/jupyter" labextension list 2>&1)
serverext=$("$venv/bin/jupyter" server extension list 2>&1)
echo "$labext" | grep -E "jupyter-specgen v[0-9.]+ .*enabled.*OK" >/dev/null \
  || { echo "check_install: jupyter-specgen labextension not enabled:"; echo "$labext"; exit 1; }
echo "$serverext" | grep -E "jupyter_specgen .*enabled" >/dev/null \
  || { echo "check_install: jupyter_specgen server extension not enabled:"; echo "$serverext"; exit 1; }
echo "$serverext" | grep -E "jupyter_specgen .*OK" >/dev/null \
  || { echo "check_install: jupyter_specgen server extension fails to load:"; echo "$serverext"; exit 1; }
echo "check_install: labextension and server extension enabled after pip install . in a fresh venv"
