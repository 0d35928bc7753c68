"""An index built with another space than the one given: :func:`stale_error`, what
:meth:`Index.open <anybind.index.Index.open>` raises (one line naming both identities and the fix: a refresh,
:mod:`.refresh`, when the space descends from the index's by its lineage) and :func:`descent`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SpaceError

if TYPE_CHECKING:
    from ..space import Space

#: lineage fields naming the identity of the space an event started from
_PARENT_FIELDS = ("parent", "base_space", "a", "b")


def descent(space: "Space", identity: str) -> str | None:
    """The lineage event (``update``, ``add_modality``, ``merge``...) by which ``space`` descends from the
    space of ``identity``, or ``None`` when its lineage does not name it."""
    for e in reversed(space.info.get("lineage", [])):
        if isinstance(e, Mapping) and any(e.get(k) == identity for k in _PARENT_FIELDS):
            return str(e.get("event", "change"))
    return None


def stale_error(path: Path, meta: Mapping[str, Any], space: "Space") -> SpaceError:
    """The one-line error of :meth:`Index.open` given a space of another identity than the index's."""
    old, new = meta["identity"], space.identity()
    event = descent(space, old)
    refresh = f"`anybind index --refresh {path} --space NEW_SPACE` (re-embeds from the feature cache, keeps ids and labels)"
    if event is not None:
        return SpaceError(f"index {path} is stale: it was built with space {old}, and the space given ({new}) "
                          f"descends from it ({event}); refresh it: {refresh}")
    return SpaceError(
        f"index {path} was built with space identity {old} (encoders {meta.get('encoders') or '-'}), but the space "
        f"given has identity {new} ({space.encoders}): its vectors would not be comparable. Refresh the index "
        f"with this space: {refresh}, or open it with the space it was built with"
    )
