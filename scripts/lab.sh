#!/usr/bin/env bash
# Install jupyter-specgen into the current Python environment and run JupyterLab with it:
# the labextension, the server extension, and the model backend it starts as a child process.
# Extra arguments go to `jupyter lab` (e.g. --SpecgenExtension.model=/path/to/model).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --upgrade pip
# On a machine without a GPU, torch 2.13.0 here resolves to the CPU build; elsewhere pip picks
# the CUDA build for it.
python3 -m pip install --quiet "torch==2.13.0"
python3 -m pip install --quiet .
exec jupyter lab "$@"
