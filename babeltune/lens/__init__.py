"""Lens (study C): language subspaces of a model's layers, manipulation training, steering, and the
multiple-choice evaluation study C reports.

- `probe` / `run_probe`: hidden states at every layer -> per-layer `LanguageSubspace` (language means,
  common vector, rank-r language-specific subspace, language directions) + diagnostics over layers;
- `steer`: a context manager that edits chosen layers' states while the model runs;
- `babeltune.lens.manipulate`: manipulation training of the top layers with study C's three losses;
- `read_mc_items` / `evaluate_mc`: multiple-choice items scored per language by `babeltune bench`
  (lm-evaluation-harness), with confidence intervals.

(The names below load lazily, so `babeltune --help` does not import torch. No submodule may share a
name with one of them: once imported, the submodule would shadow it.)
"""

from __future__ import annotations

from babeltune.lazy import export_table, lazy_getattr

_EXPORTS: dict[str, str] = export_table({
    "babeltune.lens.config": ("LensOptim", "LensTrainConfig", "ProbeConfig", "SteerConfig"),
    "babeltune.lens.diagnostics": ("LayerDiagnostics", "format_table", "layer_diagnostics"),
    "babeltune.lens.mc": ("MCItem", "evaluate_mc", "read_mc_items"),
    "babeltune.lens.probing": ("ProbeResult", "probe", "run_probe"),
    "babeltune.lens.states": ("collect_states", "state_sites"),
    "babeltune.lens.steering": ("Steering", "steer"),
    "babeltune.lens.subspace": ("LanguageSubspace", "SubspaceMismatchError", "layer_subspace"),
})

__getattr__ = lazy_getattr(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
