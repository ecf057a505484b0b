"""Lens (study C): language subspaces of a model's layers, manipulation training, steering, and the
multiple-choice evaluation study C reports.

- `probe` / `run_probe`: hidden states at every layer -> per-layer `LanguageSubspace` (language means,
  common vector, rank-r language-specific subspace, language directions) + diagnostics over layers;
- `steer`: a context manager that edits chosen layers' states while the model runs;
- `babeltune.lens.manipulate`: manipulation training of the top layers with study C's three losses;
- `evaluate_mc` / `summarize`: multiple-choice accuracy per language with confidence intervals.
"""

from babeltune.lens.config import ProbeConfig, SteerConfig
from babeltune.lens.diagnostics import LayerDiagnostics, format_table, layer_diagnostics
from babeltune.lens.mc import MCItem, evaluate_mc, read_mc_items, summarize, wilson_interval
from babeltune.lens.probe import ProbeResult, probe, run_probe
from babeltune.lens.states import collect_states, state_sites
from babeltune.lens.steering import Steering, steer
from babeltune.lens.subspace import LanguageSubspace, SubspaceMismatchError, layer_subspace

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
