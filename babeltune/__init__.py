"""babeltune: make and measure LLMs that follow instructions in many languages.

Stages, one sub-package each, in the order data flows: `data` (records, readers, mixtures),
`models` (loading, chat templates, rendering), `train`, `generate`, `evaluate`, `report`, with
`lens` beside `train`. Heavy libraries (torch, transformers) load only when used.
"""

__version__ = "0.1.0"
