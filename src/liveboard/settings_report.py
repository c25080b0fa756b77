"""What ``liveboard check-config`` prints: every setting's effective value, secrets masked.

Pure: it is given the loaded ``Settings``. A
setting whose name says it is a secret (``SECRET_WORDS``) is printed as ``***`` when set; a
URL's password (``postgresql://app:***@db/…``, ``redis://:***@cache``) is masked in any value,
so a future URL-valued setting is covered too. Multi-line values (a PEM key) show their first
line and their length.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from liveboard.config import Settings, broker_kind, setting_defaults

MASK = "***"
#: A setting whose name contains one of these is a secret as a whole.
SECRET_WORDS = ("secret", "password", "token", "api_key", "private")


def mask_url_password(value: str) -> str:
    """``value`` with the password of a ``scheme://user:password@host`` URL replaced by
    ``***``; anything else unchanged."""
    if "://" not in value or "@" not in value:
        return value
    try:
        parts = urlsplit(value)
        has_password = parts.password is not None
    except ValueError:  # not a URL after all (a bad port, say)
        return value
    if not has_password:
        return value
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{hostport}"))


def render(setting: str, value: Any) -> str:
    """One setting's value as ``check-config`` shows it."""
    if value is None:
        return ""
    if any(word in setting for word in SECRET_WORDS):
        return MASK
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = mask_url_password(str(value))
    lines = text.strip().splitlines()
    if len(lines) > 1:
        return f"{lines[0]} … ({len(lines)} lines)"
    return text


def effective_settings(settings: Settings) -> list[str]:
    """``LIVEBOARD_X=value`` for every setting, in ``Settings`` order, marked ``# default``
    when the value is the default; ``LIVEBOARD_BROKER``'s line also names the broker in use
    (``# in use: redis``), which ``auto`` leaves to the other settings."""
    values = asdict(settings)
    lines = []
    for variable, default in setting_defaults().items():
        setting = variable.removeprefix("LIVEBOARD_").lower()
        line = f"{variable}={render(setting, values[setting])}"
        notes = ["default"] if values[setting] == default else []
        if setting == "broker":
            notes.append(f"in use: {broker_kind(settings)}")
        lines.append(f"{line}  # {'; '.join(notes)}" if notes else line)
    return lines


def unknown_variable_warnings(unknown: Iterable[str]) -> list[str]:
    """One warning per unknown variable, with the closest setting's name when one is near."""
    known = list(setting_defaults())
    warnings = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"warning: {name} is not a liveboard setting{hint}; it is ignored")
    return warnings


def settings_help() -> str:
    """The list for ``serve --help``: every variable with its default."""
    rows = []
    for variable, default in setting_defaults().items():
        setting = variable.removeprefix("LIVEBOARD_").lower()
        shown = "(not set)" if default is None else render(setting, default)
        rows.append(f"  {variable:<36} {shown}")
    return "\n".join(rows)
