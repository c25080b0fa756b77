"""What text liveboard stores: the same rule on SQLite and PostgreSQL, checked at the edge.

PostgreSQL refuses U+0000 in any text value and ``VARCHAR(n)`` refuses more than ``n``
characters; SQLite stores both. Left to the databases, one input would be a 201 on SQLite and a
500 on PostgreSQL. So every piece of client text that can reach the store (request bodies, path
parameters, a token's ``sub``) is held to this module's rule before any query runs, and refused
with a 4xx from the contract's list (422 ``validation_error`` for a body field, 404 for a path
id that therefore cannot exist, 401 for a token).

The rule: a Python ``str`` that encodes to UTF-8 (no lone surrogate: JSON's ``"\\ud800"``
decodes to one, and neither database driver nor the JSON encoder can write it) and contains no
U+0000. Lengths are each field's own (its column's size, in characters: PostgreSQL's
``VARCHAR(n)`` and msgspec's ``max_length`` both count code points).

Pure functions, no I/O.
"""

from __future__ import annotations

import re
from typing import Final

#: Longest user id (a token's ``sub``, a member's ``userId``): the size of every user column.
MAX_USER_ID_LENGTH: Final = 255
#: Longest id in a path that names a stored row (workspace, project, task): their column size.
MAX_ID_LENGTH: Final = 64

#: For msgspec's ``Meta(pattern=...)`` (``re.search`` semantics; also valid ECMAScript, so the
#: OpenAPI document states it): a string without U+0000.
NO_NUL_PATTERN: Final = r"^[^\x00]*$"

# Lone surrogates (U+D800-U+DFFF) and U+0000.
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> bool:
    """True if ``text`` can be stored as is on both databases (length aside)."""
    return _UNSTORABLE.search(text) is None


def user_id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a user id, or None if it can: a string of 1 to
    ``MAX_USER_ID_LENGTH`` characters that ``storable`` accepts."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_USER_ID_LENGTH:
        return f"must be at most {MAX_USER_ID_LENGTH} characters"
    if not storable(value):
        return "must not contain U+0000 or unpaired surrogates"
    return None
