"""Typed options of `babeltune data build | validate | stats` (their flags are generated from these fields)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from babeltune.data.readers import LoadResult


@dataclass
class ReadOptions:
    """How a data command reads its source."""

    skip_invalid: bool = False
    """Count and report invalid rows instead of stopping at the first."""
    source_lang: str | None = None
    """Language of rows that carry no 'lang' column."""
    hf_split: str = "train"
    """Split of a hf: source."""
    hf_config: str | None = None
    """Config (subset) of a hf: source; several, one per language (ar,zh,en or ar=CONFIG,...), read as a
    parallel source aligned by pid."""

    def load(self, source: str | Path) -> LoadResult:
        """Every record of `source`, read with these options."""
        from babeltune.data.readers import load_records

        return load_records(source, on_invalid="skip" if self.skip_invalid else "error", lang=self.source_lang,
                            hf_split=self.hf_split, hf_config=self.hf_config)


@dataclass
class StatsOptions(ReadOptions):
    """`babeltune data stats`: the read options and the languages a prompt must be complete in."""

    languages: list[str] = field(default_factory=list)
    """Languages a prompt must be complete in (default: every language of the source)."""


READ_KEYS = ("skip_invalid", "source_lang", "hf_split", "hf_config")
