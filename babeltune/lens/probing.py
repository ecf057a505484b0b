"""Language-subspace probing, end to end: prompts -> states at every layer -> subspace -> diagnostics."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from babeltune.config import to_dict
from babeltune.lens.config import ProbeConfig
from babeltune.lens.diagnostics import LayerDiagnostics, layer_diagnostics, save_diagnostics
from babeltune.lens.prompts import ProbeSplit, collect_prompts
from babeltune.lens.states import collect_states
from babeltune.lens.subspace import LanguageSubspace

log = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    subspace: LanguageSubspace
    diagnostics: list[LayerDiagnostics]
    split: ProbeSplit
    seconds: float
    tokens: int


def template_for(tokenizer: Any, name: str) -> Any | None:
    from babeltune.models.chat import get_template

    return None if name == "none" else get_template(tokenizer, name)  # type: ignore[arg-type]


def probe(model: Any, tokenizer: Any, cfg: ProbeConfig, *, model_name: str = "",
          fingerprint: str | None = None) -> ProbeResult:
    """Probe `model` with the prompts `cfg` names; nothing is written (see `run_probe`)."""
    start = time.perf_counter()
    split = collect_prompts(
        tokenizer, template_for(tokenizer, cfg.template), sources=cfg.data, texts=cfg.text,
        parallel_text=cfg.parallel_text, languages=cfg.languages or None, max_tokens=cfg.max_prompt_tokens,
        per_language=cfg.per_language, min_per_language=cfg.min_per_language, holdout=cfg.holdout, seed=cfg.seed,
    )
    languages = list(split.train)
    if cfg.central not in languages:
        raise ValueError(f"central language {cfg.central!r} has no prompts (found: {', '.join(languages)})")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def states(items: list[Any]) -> torch.Tensor:
        return collect_states(model, [p.ids for p in items], pad, pool=cfg.pool, batch_size=cfg.batch_size,
                              padding_side=cfg.padding_side)  # (L, N, D)

    train_states = {lang: states(split.train[lang]) for lang in languages}
    means = torch.stack([train_states[lang].double().mean(dim=1) for lang in languages], dim=1)  # (L, n, D)
    tokens = sum(len(p.ids) for side in (split.train, split.heldout) for items in side.values() for p in items)
    meta = {
        "model": model_name, "fingerprint": fingerprint, "pool": cfg.pool, "template": cfg.template,
        "max_prompt_tokens": cfg.max_prompt_tokens, "counts": split.counts(), "prompts": split.report.to_dict(),
        "layer_convention": "hidden_states[l + 1]: decoder layer l's output; the last layer after the final norm",
        "config": to_dict(cfg),
    }
    subspace = LanguageSubspace.from_means(languages, cfg.central, means, cfg.rank, meta)
    diagnostics: list[LayerDiagnostics] = []
    held = {lang: items for lang, items in split.heldout.items() if items}
    if cfg.holdout > 0 and len(held) >= 2:
        held_states = {lang: states(items) for lang, items in held.items()}
        pids = {lang: [p.pid for p in items] for lang, items in held.items()}
        parallel = bool(cfg.data) or cfg.parallel_text
        diagnostics = layer_diagnostics(subspace, held_states, pids if parallel else None)
    return ProbeResult(subspace, diagnostics, split, time.perf_counter() - start, tokens)


def run_probe(cfg: ProbeConfig, out: str | Path) -> ProbeResult:
    """Load the model, probe it, and write the subspace, diagnostics and run.json into `out`."""
    from babeltune.models.loading import load_model, model_fingerprint
    from babeltune.runinfo import write_run_info

    torch.manual_seed(cfg.seed)
    loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    result = probe(loaded.model, loaded.tokenizer, cfg, model_name=loaded.name,
                   fingerprint=model_fingerprint(loaded.path))
    folder = Path(out)
    result.subspace.save(folder)
    if result.diagnostics:
        save_diagnostics(result.diagnostics, folder, f"language subspace of {loaded.name}")
    write_run_info(folder, config=cfg, seed=cfg.seed, data=result.split.report.fingerprints,
                   extra={"compute": {"seconds": round(result.seconds, 2), "prompt_tokens": result.tokens},
                          "counts": result.split.counts()})
    return result
