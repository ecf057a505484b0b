"""`babeltune model prepare | info | render`."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from babeltune.cli import positive_int


def register(sub: Any) -> None:
    parser = sub.add_parser("model", help="prepare the default model, inspect a model, show rendering")
    model_sub = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)

    prepare = model_sub.add_parser("prepare", help="build the default model's safetensors cache (once)")
    prepare.add_argument("--rebuild", action="store_true")
    prepare.set_defaults(func=cmd_prepare)

    info = model_sub.add_parser("info", help="architecture, size, template and fingerprint of a model")
    info.add_argument("--model", default="gemma-3-270m")
    info.set_defaults(func=cmd_info)

    render = model_sub.add_parser("render", help="show how records are rendered (template, loss mask)")
    render.add_argument("--model", default="gemma-3-270m")
    render.add_argument("--data", default="bundled:train")
    render.add_argument("--template", default="auto", choices=["auto", "gemma", "tokenizer"])
    render.add_argument("--per-language", type=positive_int, default=1, help="samples shown per language")
    render.set_defaults(func=cmd_render)


def cmd_prepare(args: argparse.Namespace) -> int:
    from babeltune.models.loading import default_model_dir

    start = time.time()
    path = default_model_dir(rebuild=args.rebuild)
    print(f"default model ready at {path} ({time.time() - start:.1f} s)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from babeltune.models.chat import get_template
    from babeltune.models.loading import load_model, model_fingerprint

    loaded = load_model(args.model)
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

    tokenizer = load_tokenizer(args.model)
    template = get_template(tokenizer, args.template)
    print(json.dumps(template.describe(), indent=2, ensure_ascii=False))
    shown: dict[str, int] = {}
    for rec in read_records(args.data):
        if shown.get(rec.lang, 0) >= args.per_language:
            continue
        shown[rec.lang] = shown.get(rec.lang, 0) + 1
        ex = render_for_training(tokenizer, template, rec.messages)
        text = tokenizer.decode(ex.input_ids)
        trained = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX])
        print(f"--- {rec.id} ({rec.lang}): {len(ex.input_ids)} tokens, {ex.n_trained} trained")
        print(text)
        print(f"[trained] {trained!r}")
    return 0
