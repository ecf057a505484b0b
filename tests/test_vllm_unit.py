"""The vLLM backend's pieces that need no vLLM: the import hint, decoding settings -> SamplingParams
fields, engine sharing keys, the CLI flags. (tests/test_vllm.py runs the backend itself.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from babeltune.cli import main
from babeltune.generate import DecodingSettings, GenerationRequest
from babeltune.generate.config import VLLMConfig
from babeltune.generate.vllm import engine_key, sampling_kwargs

REPO = Path(__file__).resolve().parents[1]


def test_babeltune_imports_without_vllm_and_says_how_to_install_it() -> None:
    code = ("import sys; sys.modules['vllm'] = None\n"  # any `import vllm` now raises ImportError
            "import babeltune.generate.vllm as v\n"
            "try:\n    v.vllm_version()\nexcept RuntimeError as e:\n    print('hint:', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "hint: vLLM is not installed" in proc.stdout and "vllm_cpu_env.sh" in proc.stdout


def test_greedy_settings_map_to_greedy_sampling_with_the_backends_stops() -> None:
    settings = DecodingSettings(max_new_tokens=7, repetition_penalty=1.2, top_k=5, top_p=0.5)
    kwargs = sampling_kwargs(GenerationRequest("a", ()), settings, [106, 1])
    assert kwargs["temperature"] == 0.0 and kwargs["seed"] is None and (kwargs["top_k"], kwargs["top_p"]) == (0, 1.0)
    assert (kwargs["max_tokens"], kwargs["repetition_penalty"]) == (7, 1.2)
    assert kwargs["stop_token_ids"] == [106, 1] and kwargs["ignore_eos"] is True  # only babeltune's stops


def test_sampled_settings_keep_each_prompts_own_seed() -> None:
    settings = DecodingSettings(temperature=0.7, top_k=40, top_p=0.9, seed=3)
    a = sampling_kwargs(GenerationRequest("a", ()), settings, [1])
    b = sampling_kwargs(GenerationRequest("b", ()), settings, [1])
    assert (a["temperature"], a["top_k"], a["top_p"]) == (0.7, 40, 0.9)
    assert a["seed"] == GenerationRequest("a", ()).sampling_seed(settings) != b["seed"]
    assert sampling_kwargs(GenerationRequest("a", (), seed=11), settings, [1])["seed"] == 11


def test_engines_are_shared_by_model_and_engine_settings_not_by_template() -> None:
    base = engine_key("/m", VLLMConfig())
    assert engine_key("/m", VLLMConfig(template="gemma")) == base
    assert engine_key("/m", VLLMConfig(dtype="bfloat16")) != base
    assert engine_key("/other", VLLMConfig()) != base


@pytest.mark.parametrize("flags, message", [
    (["--vllm-max-num-seqs", "0"], "max_num_seqs must be >= 1"),
    (["--vllm-gpu-memory-utilization", "1.5"], "gpu_memory_utilization must be in"),
    (["--steer", "somewhere"], "--steer needs the local backend"),
])
def test_vllm_flags_are_validated_before_any_engine_starts(flags: list[str], message: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--backend", "vllm", "--data", "bundled:eval", "--out", str(tmp_path / "g.jsonl"),
                 *flags])
    assert code == 2 and message in capsys.readouterr().err


def test_vllm_flags_set_the_vllm_config() -> None:
    import argparse

    from babeltune.cli import build_parser, command_config
    from babeltune.generate.cli import _GENERATE_FLAGS
    from babeltune.generate.config import GenerateConfig

    args = build_parser().parse_args([
        "generate", "--backend", "vllm", "--out", "g.jsonl", "--vllm-dtype", "bfloat16",
        "--vllm-tensor-parallel-size", "2", "--vllm-data-parallel-size", "3", "--vllm-gpu-memory-utilization", "0.2",
        "--vllm-max-model-len", "2048", "--vllm-max-lora-rank", "16", "--vllm-max-loras", "2",
        "--vllm-max-num-seqs", "8", "--vllm-enforce-eager", "--vllm-seed", "5", "--vllm-template", "gemma"])
    assert isinstance(args, argparse.Namespace)
    cfg = command_config(GenerateConfig, args, _GENERATE_FLAGS)
    assert cfg.backend == "vllm"
    assert cfg.vllm == VLLMConfig(dtype="bfloat16", tensor_parallel_size=2, data_parallel_size=3,
                                  gpu_memory_utilization=0.2, max_model_len=2048, max_lora_rank=16, max_loras=2,
                                  max_num_seqs=8, enforce_eager=True, seed=5, template="gemma")
