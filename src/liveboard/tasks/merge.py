"""When an edit made from a stale ``version`` may still be applied: the merge rule, pure.

An edit (``PATCH /api/tasks/{tid}``) may name the version it was made from (``version`` in its
body, or ``If-Match``). The rule, decided by ``decide`` from the task's row as locked for the
change, without any I/O:

* No version, or the task's current version: the edit applies (``Verdict.merged`` is empty).
* A version above the task's: the task was never at it; a ``conflict`` naming no field.
* A stale version ``v``: the edit's changes (``changes.diff``: the fields it gives with a value
  other than the task's now) are compared with what changed since ``v``. A field collides when
  it was last set at a version above ``v``: someone changed it after the editor read it, and
  applying would overwrite a change the editor has not seen. Any collision: a ``conflict``
  naming every colliding field, and nothing is applied. None: the edit applies and
  ``Verdict.merged`` names the fields it changed.

What does not collide: a field given with the value the task already has (no change, so nothing
to overwrite), a field nobody set since ``v``, and a move (``status`` and ``order``, which an
edit cannot change) or an edit of other fields since ``v``.

``field_versions`` maps each editable field (``changes.EditableField``) to the version of the
task at which it got its current value: 1 for a field set at creation, the new version for a
field an edit changed (``next_field_versions``). ``known_field_versions`` reads them from what
the task's row recorded: when its last change was made by a release that records none of this
(a row from before migration 2, or an older instance during a rolling upgrade), every field
counts as changed at the current version, so every stale edit is a conflict, as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from liveboard import errors
from liveboard.protocol import Task
from liveboard.tasks.changes import WIRE_NAMES, Change, EditableField


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with an edit: refuse it with ``conflict`` (a 409), or apply it.

    ``merged``: the fields applied on top of a stale version, in ``WIRE_NAMES`` order (empty
    when the version was current or not given, or when the edit changes nothing)."""

    conflict: errors.ApiError | None = None
    merged: tuple[EditableField, ...] = ()


APPLY = Verdict()


def known_field_versions(
    recorded: Mapping[str, int | None], recorded_at: int | None, current_version: int
) -> dict[str, int]:
    """Each editable field's version, from ``recorded`` (the row's field versions, written at
    version ``recorded_at``): trusted only if the task's last change wrote them; else every
    field counts as changed at ``current_version`` (any of them may have been)."""
    if recorded_at == current_version:
        return {f: current_version if v is None else v for f, v in recorded.items()}
    return dict.fromkeys(recorded, current_version)


def next_field_versions(
    field_versions: Mapping[str, int], changed: Iterable[str], new_version: int
) -> dict[str, int]:
    """``field_versions`` after a change to ``new_version`` that set the fields ``changed``."""
    return {**field_versions, **dict.fromkeys(changed, new_version)}


def decide(
    current_version: int,
    expected_version: int | None,
    found: Mapping[EditableField, Change],
    field_versions: Mapping[str, int],
) -> Verdict:
    """The verdict on an edit whose changes against the task now are ``found`` (see the
    module's rule). ``found`` is in ``WIRE_NAMES`` order, as ``changes.diff`` gives it."""
    if expected_version is None or expected_version == current_version:
        return APPLY
    if expected_version > current_version:
        return Verdict(conflict=version_conflict(current_version, expected_version))
    colliding = tuple(f for f in found if field_versions[f] > expected_version)
    if colliding:
        return Verdict(conflict=version_conflict(current_version, expected_version, colliding))
    return Verdict(merged=tuple(found))


def wire_fields(fields: tuple[EditableField, ...]) -> list[str]:
    """``fields`` by their names on the wire (``assigneeId``)."""
    return [WIRE_NAMES[f] for f in fields]


def version_conflict(
    current_version: int, expected_version: int, colliding: tuple[EditableField, ...] = ()
) -> errors.ApiError:
    """The 409 for a change expected at another version: ``details.currentVersion``, and
    ``details.fields`` (wire names) when an edit's fields collided."""
    if not colliding:
        return errors.conflict(
            f"task is at version {current_version}, not {expected_version}",
            details={"currentVersion": current_version},
        )
    names = wire_fields(colliding)
    return errors.conflict(
        f"{', '.join(names)} changed since version {expected_version} "
        f"(the task is at version {current_version})",
        details={"currentVersion": current_version, "fields": names},
    )


class Edited(NamedTuple):
    """An edit's outcome: the task as it is now, and the fields merged onto a stale version
    (``Verdict.merged``; empty when the version was current or not given)."""

    task: Task
    merged: tuple[EditableField, ...] = ()
