"""The Orchestry API reference's own examples (`../shared/seeds/002`), copied as written.

`orchestry_doc.json` holds the document's JSON blocks in document order, each under a name (extracted
mechanically, not edited): a change there is a change of the contract.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

_EXAMPLES: dict[str, Any] = json.loads((Path(__file__).with_name("orchestry_doc.json")).read_text())


def example(name: str) -> Any:
    """A fresh copy of one example (tests may change what they send)."""
    return copy.deepcopy(_EXAMPLES[name])
