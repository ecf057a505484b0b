"""Lens (study C): language subspaces of a model's layers, manipulation training, steering, and the
multiple-choice evaluation study C reports.

- `probe` / `run_probe`: hidden states at every layer -> per-layer `LanguageSubspace` (language means,
  common vector, rank-r language-specific subspace, language directions) + diagnostics over layers;
- `steer`: a context manager that edits chosen layers' states while the model runs;
- `babeltune.lens.manipulate`: manipulation training of the top layers with study C's three losses;
- `evaluate_mc` / `summarize`: multiple-choice accuracy per language with confidence intervals.

(The names below load lazily, so `babeltune --help` does not import torch. No submodule may share a
name with one of them: once imported, the submodule would shadow it.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from babeltune.lazy import lazy_getattr

if TYPE_CHECKING:
    from babeltune.lens.config import ProbeConfig, SteerConfig
    from babeltune.lens.diagnostics import LayerDiagnostics, format_table, layer_diagnostics
    from babeltune.lens.mc import MCItem, evaluate_mc, read_mc_items, summarize, wilson_interval
    from babeltune.lens.probing import ProbeResult, probe, run_probe
    from babeltune.lens.states import collect_states, state_sites
    from babeltune.lens.steering import Steering, steer
    from babeltune.lens.subspace import LanguageSubspace, SubspaceMismatchError, layer_subspace

_EXPORTS: dict[str, str] = {
    "LanguageSubspace": "babeltune.lens.subspace",
    "LayerDiagnostics": "babeltune.lens.diagnostics",
    "MCItem": "babeltune.lens.mc",
    "ProbeConfig": "babeltune.lens.config",
    "ProbeResult": "babeltune.lens.probing",
    "SteerConfig": "babeltune.lens.config",
    "Steering": "babeltune.lens.steering",
    "SubspaceMismatchError": "babeltune.lens.subspace",
    "collect_states": "babeltune.lens.states",
    "evaluate_mc": "babeltune.lens.mc",
    "format_table": "babeltune.lens.diagnostics",
    "layer_diagnostics": "babeltune.lens.diagnostics",
    "layer_subspace": "babeltune.lens.subspace",
    "probe": "babeltune.lens.probing",
    "read_mc_items": "babeltune.lens.mc",
    "run_probe": "babeltune.lens.probing",
    "state_sites": "babeltune.lens.states",
    "steer": "babeltune.lens.steering",
    "summarize": "babeltune.lens.mc",
    "wilson_interval": "babeltune.lens.mc",
}


__getattr__ = lazy_getattr(__name__, _EXPORTS)


__all__ = [
    "LanguageSubspace",
    "LayerDiagnostics",
    "MCItem",
    "ProbeConfig",
    "ProbeResult",
    "SteerConfig",
    "Steering",
    "SubspaceMismatchError",
    "collect_states",
    "evaluate_mc",
    "format_table",
    "layer_diagnostics",
    "layer_subspace",
    "probe",
    "read_mc_items",
    "run_probe",
    "state_sites",
    "steer",
    "summarize",
    "wilson_interval",
]
