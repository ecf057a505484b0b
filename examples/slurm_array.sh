#!/bin/bash
# One babeltune worker per Slurm array task, one GPU each, all sharing one run folder:
#
#   sbatch --array=0-7 examples/slurm_array.sh study-a-pinch          # 8 workers on the grid
#   sbatch --dependency=afterany:JOBID examples/slurm_array.sh --final study-a-pinch
#                                                                     # then results.csv + report.html
#
# Each worker claims the next unclaimed condition in RUN_DIR/claims (lock files created atomically,
# safe on NFS), trains it, generates and evaluates, and goes on until none is left; the last workers
# judge the conditions whose references are finished. A task that dies (preemption, node failure,
# time limit) stops sending heartbeats: after --stale-after seconds another worker (or a re-queued
# task) takes its condition over and resumes it from its checkpoints and generation files. The final
# plain `babeltune run` finds every stage done and writes results and the report.
#
# Requeue-friendly: resubmitting the same array simply continues.
#SBATCH --job-name=babeltune
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%A_%a.out
#SBATCH --requeue

set -euo pipefail

FINAL=0
if [[ "${1:-}" == "--final" ]]; then FINAL=1; shift; fi
EXPERIMENT="${1:?usage: slurm_array.sh [--final] EXPERIMENT [more babeltune run options]}"
shift
RUN_DIR="${RUN_DIR:-runs/$(basename "${EXPERIMENT%.yaml}")}"   # on the shared file system

# Model and data caches on the shared file system, read by every node; the hub is not contacted
# (download once beforehand: `huggingface-cli download MODEL`, `babeltune model prepare`).
export HF_HOME="${HF_HOME:-$PWD/.cache/huggingface}"
export BABELTUNE_CACHE="${BABELTUNE_CACHE:-$PWD/.cache/babeltune}"
export HF_HUB_OFFLINE=1
# vLLM (generate.backend: vllm) keeps compiled kernels per node; keep them off NFS.
export VLLM_CACHE_ROOT="${VLLM_CACHE_ROOT:-${TMPDIR:-/tmp}/vllm-cache-$USER}"
export TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-8}"

if [[ "$FINAL" == 1 ]]; then
  exec babeltune run "$EXPERIMENT" --out "$RUN_DIR" "$@"
fi

# Heartbeat every 60 s; a claim silent for 15 min is a dead task's. The clocks of the nodes must
# agree to well within that (NTP). Add e.g. `--set generate.backend=vllm` to generate with vLLM.
exec babeltune run "$EXPERIMENT" --out "$RUN_DIR" --worker --heartbeat 60 --stale-after 900 "$@"
