#!/usr/bin/env bash
# Install everything the tests need and run them all: Python (CPU torch 2.13.0, the package in
# editable mode with its test extras), node packages and the labextension build, Debian's
# chromium for the browser test. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet "torch==2.13.0"  # the CPU build on machines without a GPU
python3 -m pip install --quiet hatchling editables hatch-nodejs-version hatch-jupyter-builder "jupyterlab>=4.4,<4.7"
jlpm install
jlpm build
# The VS Code extension (vscode/): its own npm package and lock file, apart from the root's yarn
# install; building, testing and packaging it need no install scripts.
npm ci --prefix vscode --ignore-scripts --no-audit --no-fund
npm run package --prefix vscode >/dev/null   # tsc, then vsce: vscode/specgen.vsix
# An editable install copies the labextension just built into share/jupyter/labextensions; a
# symlink left there by `jupyter labextension develop` would make pip fail, so it goes first.
labext_dir="$(python3 -c 'import sys; print(sys.prefix)')/share/jupyter/labextensions/jupyter-specgen"
[ -L "$labext_dir" ] && rm "$labext_dir"
python3 -m pip install --quiet --no-build-isolation -e ".[test]"
jupyter server extension enable --sys-prefix jupyter_specgen >/dev/null

# The packaging check builds a wheel in a fresh virtual environment (reusing the installed
# dependencies) and asks Jupyter whether both extensions are enabled there.
bash scripts/check_install.sh

# vLLM's CPU build, in a virtual environment of its own (its pins clash with ours), for the vLLM
# engine's tests (tests/backend/test_vllm.py); built once per machine, reused after that.
bash scripts/vllm_env.sh >/dev/null

# code-server 4.110.0 and its Node 22 for the real-VS-Code test (tests/browser/test_vscode_code_server.py),
# in ~/.cache/jupyter-specgen/, where the test finds them; built once per machine, reused after that.
bash scripts/code_server_env.sh >/dev/null

python3 -m pytest -ra "$@"
