"""Language identification as the offline judge sees it: the evaluation stage's identifier, so the
judge and the correct-language rates agree on what language a response is in.

Returns a babeltune code, or None when the response is too short or not linguistic enough to tell
(the evaluation stage's "undetermined"): the judge then does not count it as the wrong language.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def _identifier() -> Any:
    from babeltune.evaluate import get_identifier

    return get_identifier("py3langid")


def identify_language(text: str) -> str | None:
    from babeltune.evaluate import identify

    code, _, _ = identify(text, _identifier())
    return code
