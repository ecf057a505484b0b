"""Models: loading (the embedded default, local folders, hub ids), chat templates and rendering."""

from babeltune.models.chat import (
    IGNORE_INDEX,
    ChatTemplate,
    GemmaTurnTemplate,
    RenderedExample,
    RenderError,
    TokenizerTemplate,
    get_template,
    render_for_training,
    render_prompt,
)
from babeltune.models.loading import (
    DEFAULT_MODEL,
    LoadedModel,
    ModelLoadError,
    cache_dir,
    default_model_dir,
    load_model,
    load_tokenizer,
    make_trainable,
    model_fingerprint,
)

__all__ = [
    "DEFAULT_MODEL",
    "IGNORE_INDEX",
    "ChatTemplate",
    "GemmaTurnTemplate",
    "LoadedModel",
    "ModelLoadError",
    "RenderError",
    "RenderedExample",
    "TokenizerTemplate",
    "cache_dir",
    "default_model_dir",
    "get_template",
    "load_model",
    "load_tokenizer",
    "make_trainable",
    "model_fingerprint",
    "render_for_training",
    "render_prompt",
]
