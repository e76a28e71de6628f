"""How deeply a JSON text nests, measured without decoding it.

Python's `json` recurses once per level and raises RecursionError past about a thousand levels, a
few kilobytes of brackets. Parsers of outside input (tunables documents, queued records) measure
the depth first and refuse a text deeper than they can use, with a reason, before `json` sees it.
"""

from __future__ import annotations

__all__ = ["nesting_depth"]


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (0 for a scalar), brackets inside strings left out.

    Linear, and well defined for any text: on malformed JSON it still counts brackets, which is all a
    caller needs to refuse before decoding.
    """
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
