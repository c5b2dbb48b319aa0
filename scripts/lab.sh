#!/usr/bin/env bash
# Run JupyterLab with jupyter-specgen: the labextension, the server extension, and the model
# backend it starts as a child process. Installs into the current Python environment first, but
# only when needed: nothing installed yet, or the source changed since the last install made by
# this script. An editable install (what `bash scripts/test.sh` makes) is used as it is, never
# replaced by a copy. As root (containers, cloud notebooks) it adds --allow-root and says so.
# Extra arguments go to `jupyter lab` (e.g. --SpecgenExtension.model=/path/to/model).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "lab.sh: $*" >&2; }

# What the installed copy was built from: the files that go into the wheel.
source_digest() {
  find pyproject.toml package.json install.json jupyter-config jupyter_specgen backend/specgen_backend \
    labextension/src schema style -type f \
    ! -path '*/__pycache__/*' ! -path 'jupyter_specgen/labextension/*' ! -name '_version.py' -print0 2>/dev/null \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

prefix=$(python3 -c 'import sys; print(sys.prefix)')
stamp="$prefix/share/jupyter-specgen/installed-from"
# "editable", "copy", or "" (not installed), from pip's own record of how it was installed.
how=$(python3 - <<'EOF' 2>/dev/null || true
import json
from importlib import metadata
try:
    dist = metadata.distribution("jupyter-specgen")
except metadata.PackageNotFoundError:
    print("")
else:
    url = json.loads(dist.read_text("direct_url.json") or "{}")
    print("editable" if url.get("dir_info", {}).get("editable") else "copy")
EOF
)

if ! python3 -c 'import torch' >/dev/null 2>&1; then
  # On a machine without a GPU, torch 2.13.0 resolves to the CPU build; elsewhere pip picks the
  # CUDA build for it.
  say "installing torch 2.13.0"
  python3 -m pip install --quiet "torch==2.13.0"
fi

digest=$(source_digest)
if [ "$how" = "editable" ]; then
  say "jupyter-specgen is installed in editable mode (from scripts/test.sh): using it as it is"
elif [ "$how" = "copy" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  say "jupyter-specgen is installed and up to date: not reinstalling"
else
  if [ -z "$how" ]; then say "installing jupyter-specgen"; else say "the source changed: reinstalling jupyter-specgen"; fi
  python3 -m pip install --quiet .
  mkdir -p "$(dirname "$stamp")"
  echo "$digest" > "$stamp"
fi

args=()
if [ "$(id -u)" = 0 ]; then
  say "running as root: adding --allow-root (JupyterLab refuses root without it)"
  args+=(--allow-root)
fi
# The environment's own jupyter-lab script, not `python3 -m jupyterlab`: -m would put this folder
# first on sys.path, and the source tree's jupyter_specgen would shadow the installed one.
exec "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/jupyter-lab" "${args[@]}" "$@"
