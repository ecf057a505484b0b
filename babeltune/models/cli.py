"""`babeltune model prepare | info | render`."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from babeltune.cli import command_config, positive_int
from babeltune.models.config import ModelInfoConfig, PrepareConfig, RenderConfig
from babeltune.options import add_config_flags


def register(sub: Any) -> None:
    parser = sub.add_parser("model", help="prepare the default model, inspect a model, show rendering")
    model_sub = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)

    prepare = model_sub.add_parser("prepare", help="build the default model's safetensors cache (once)")
    flags = add_config_flags(prepare, PrepareConfig, ("rebuild",))
    prepare.set_defaults(func=cmd_prepare, config_flags=flags)

    info = model_sub.add_parser("info", help="architecture, size, template and fingerprint of a model")
    flags = add_config_flags(info, ModelInfoConfig, ("model",))
    info.set_defaults(func=cmd_info, config_flags=flags)

    render = model_sub.add_parser("render", help="show how records are rendered (template, loss mask)")
    flags = add_config_flags(render, RenderConfig, ("model", "data", "template", "per_language"),
                             extra={"per_language": {"type": positive_int}})
    render.set_defaults(func=cmd_render, config_flags=flags)


def cmd_prepare(args: argparse.Namespace) -> int:
    from babeltune.models.loading import default_model_dir

    cfg: PrepareConfig = command_config(PrepareConfig, args)
    start = time.time()
    path = default_model_dir(rebuild=cfg.rebuild)
    print(f"default model ready at {path} ({time.time() - start:.1f} s)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from babeltune.models.chat import get_template
    from babeltune.models.loading import load_model, model_fingerprint

    cfg: ModelInfoConfig = command_config(ModelInfoConfig, args)
    loaded = load_model(cfg.model)
    model = loaded.model
    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "model": loaded.name,
        "path": loaded.path,
        "architecture": type(model).__name__,
        "parameters": n_params,
        "layers": getattr(model.config, "num_hidden_layers", None),
        "hidden_size": getattr(model.config, "hidden_size", None),
        "vocab_size": getattr(model.config, "vocab_size", None),
        "template": get_template(loaded.tokenizer).describe(),
        "fingerprint": model_fingerprint(loaded.path),
    }
    print(json.dumps(info, indent=2, ensure_ascii=False))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from babeltune.data.readers import read_records
    from babeltune.models.chat import IGNORE_INDEX, get_template, render_for_training
    from babeltune.models.loading import load_tokenizer

    cfg: RenderConfig = command_config(RenderConfig, args)
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(tokenizer, cfg.template)
    print(json.dumps(template.describe(), indent=2, ensure_ascii=False))
    shown: dict[str, int] = {}
    for rec in read_records(cfg.data):
        if shown.get(rec.lang, 0) >= cfg.per_language:
            continue
        shown[rec.lang] = shown.get(rec.lang, 0) + 1
        ex = render_for_training(tokenizer, template, rec.messages)
        text = tokenizer.decode(ex.input_ids)
        trained = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX])
        print(f"--- {rec.id} ({rec.lang}): {len(ex.input_ids)} tokens, {ex.n_trained} trained")
        print(text)
        print(f"[trained] {trained!r}")
    return 0
