"""Label values taken from payloads (feature names): whatever a client sends, they are valid
UTF-8, printable, bounded in length, and bounded in count per model by the feature budget.

prometheus_client writes label values as UTF-8 at every scrape: one lone surrogate in one label
value makes every scrape of the endpoint fail, so the pod would lose all of its metrics.
"""

from __future__ import annotations

MAX_LABEL_LENGTH = 64
REPLACEMENT = "\ufffd"


def safe_label(text: object, limit: int = MAX_LABEL_LENGTH) -> str:
    """`text` as a label value: cut to `limit` characters, each character that is not printable
    (controls, lone surrogates, separators other than space) replaced by U+FFFD."""
    value = str(text)[:limit]
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else REPLACEMENT for c in value)
