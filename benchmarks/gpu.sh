#!/usr/bin/env bash
# One prepared GPU run: on a bare CUDA machine (torch, triton, transformers and peft installed; no
# network; nothing else), in at most about 8 minutes, it checks the compiled Triton kernels against
# the torch reference, times batched LoRA/fLoRA at serving shapes against base-only, PEFT's mixed
# batch and gather-bmm, and times the serving backend at 1/8/32 users. Each step writes its table
# to OUT (the folder given as the first argument); a step that fails or runs out of its time is
# recorded in OUT/summary.md and the next one still runs.
#
#   bash benchmarks/gpu.sh OUT [WHEELHOUSE]
#
# WHEELHOUSE (optional): a folder of wheels for what the serving benchmark needs beyond torch
# and transformers (websockets, prometheus_client), made beforehand on a machine with network:
#   pip download --only-binary=:all: -d wheelhouse websockets prometheus_client
# They are installed with --no-index into a throwaway target folder, never into the system.
# GPU_SH_SMOKE=1 runs every step at tiny shapes on the CPU (Triton interpreted): a check of the
# script itself, not a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu.sh OUT [WHEELHOUSE]}
wheelhouse=${2:-}
mkdir -p "$out"
summary="$out/summary.md"
export PYTHONPATH="$PWD/backend${PYTHONPATH:+:$PYTHONPATH}"
smoke=${GPU_SH_SMOKE:-0}
started=$(date +%s)

note() { echo "$*" | tee -a "$summary"; }

# step NAME SECONDS FILE COMMAND...: run COMMAND with a time limit, its output into OUT/FILE.
step() {
  local name=$1 limit=$2 file=$3
  shift 3
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$out/$file" 2>"$out/${file%.*}.stderr"
  local rc=$? t=$(( $(date +%s) - t0 ))
  case $rc in
    0) note "- $name: ok in ${t} s → \`$file\`" ;;
    124|137) note "- $name: STOPPED at its ${limit} s limit (partial table in \`$file\`)" ;;
    *) note "- $name: FAILED with exit code $rc in ${t} s (see \`${file%.*}.stderr\`)" ;;
  esac
}

: >"$summary"
note "# benchmarks/gpu.sh, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
python3 - <<'EOF' | tee -a "$summary"
import importlib, torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)"
print(f"- GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}")
for name in ("triton", "transformers", "peft", "websockets", "prometheus_client"):
    try:
        print(f"- {name} {getattr(importlib.import_module(name), '__version__', 'present')}")
    except Exception as exc:  # noqa: BLE001 - report what is missing, go on
        print(f"- {name}: not importable ({type(exc).__name__})")
EOF

if [ "$smoke" = 1 ]; then
  export TRITON_INTERPRET=1 SPECGEN_LORA_BACKEND=triton
  device=(--device cpu)
  kernels=(--quick --dtypes float32)
  half=(--hidden 64 --intermediate 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 --dtype float32)
  seven=("${half[@]}")
  decode=(--batches 8 --context 16 --min-time 0.01)
  serving=(--users 1 2 --requests 1 --new-tokens 4)
else
  python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { note "no CUDA device: nothing measured (GPU_SH_SMOKE=1 checks the script on a CPU)"; exit 1; }
  device=(--device cuda)
  kernels=()
  # Qwen2.5-0.5B's shape (hidden 896, 24 layers, GQA 14/2, vocab 151936) and a 7B-class block
  # (Llama-2-7B: hidden 4096, MLP 11008, 32/32 heads) with 8 of its 32 layers: the per-step ratios
  # of a layer stack do not depend on the layer count, and 8 layers keep the run within its budget.
  half=(--hidden 896 --intermediate 4864 --layers 24 --heads 14 --kv-heads 2 --vocab 151936 --dtype bfloat16)
  seven=(--hidden 4096 --intermediate 11008 --layers 8 --heads 32 --kv-heads 32 --vocab 32000 --dtype bfloat16)
  decode=(--batches 1,64 --context 512 --min-time 0.2)
  serving=(--users 1 8 32 --requests 3 --new-tokens 32)
fi

step "Triton kernels vs torch reference (compiled)" 90 kernels.md \
  python3 benchmarks/gpu_kernels.py "${device[@]}" "${kernels[@]}"
step "LoRA decode, 0.5B shape, 64 distinct rank-16 adapters" 100 lora_0.5b.txt \
  python3 benchmarks/bench_lora.py "${device[@]}" "${half[@]}" "${decode[@]}" --ranks 16 \
  --mixes identical,distinct --phases decode --json "$out/lora_0.5b.json"
step "LoRA decode + prefill, 7B-class shape (8 layers), rank 16" 90 lora_7b.txt \
  python3 benchmarks/bench_lora.py "${device[@]}" "${seven[@]}" "${decode[@]}" --ranks 16 \
  --mixes distinct --phases decode,prefill --prefill 64 --json "$out/lora_7b.json"
step "fLoRA decode, 0.5B shape, 64 distinct adapters, ranks 1-8" 80 flora_0.5b.txt \
  python3 benchmarks/bench_lora.py "${device[@]}" "${half[@]}" "${decode[@]}" --kind flora --ranks 1,2,4,8 \
  --mixes distinct --phases decode --json "$out/flora_0.5b.json"

# The serving benchmark runs the real websockets backend: bring its two small dependencies from
# the wheelhouse when the machine lacks them.
if ! python3 -c 'import websockets, prometheus_client' 2>/dev/null; then
  if [ -n "$wheelhouse" ] && [ -d "$wheelhouse" ]; then
    target=$(mktemp -d)
    python3 -m pip install --quiet --no-index --find-links "$wheelhouse" --target "$target" websockets prometheus_client \
      && export PYTHONPATH="$PYTHONPATH:$target"
  fi
fi
if python3 -c 'import websockets, prometheus_client' 2>/dev/null; then
  step "serving: 1/8/32 users on distinct adapters, batched vs one at a time" 100 serving.txt \
    python3 benchmarks/bench_serving.py "${serving[@]}"
else
  note "- serving: SKIPPED: websockets/prometheus_client are not installed and no wheelhouse was given"
fi
note "total: $(( $(date +%s) - started )) s"
