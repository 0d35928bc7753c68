"""Prompt templates for zero-shot classification: ``"a photo of a {}."`` filled with a class name.

A template is checked by :func:`check_template` before anything is filled, and filled by
:func:`fill_template` by plain substitution, never by ``str.format``: a format spec such as
``{:>2000000000}`` would allocate gigabytes, and ``{0.__class__}`` would reach into objects.
The only placeholder is ``{}`` (also spelled ``{0}`` or ``{label}``), as often as wanted;
``{{`` and ``}}`` are literal braces.  A filled template is at most
``len(template) * (1 + len(name))`` characters long.

A space may carry its own prompts (``space.info["templates"]``: an imported CLIP pair stores CLIP's ensemble,
see :mod:`anybind.pairs`; any space can be given or choose its own, see :mod:`anybind.prompts`);
:func:`templates_for` is what every zero-shot path uses when none are given.

A space may also carry descriptions of its classes (``space.info["descriptions"]``: class name -> sentences, no
``{}``; written by a language model, :mod:`anybind.caption.describe`): a described class's vector is the mean of
its filled templates and its descriptions (CuPL); :func:`descriptions_for` gives them, :func:`check_descriptions`
checks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any
from string import Formatter

from ..errors import DataError

#: the prompt of a space that carries none of its own
DEFAULT_TEMPLATES = ("a {}.",)
#: CLIP's prompt: "a photo of a {}." and the ensemble OpenAI's CLIP notebook selected for ImageNet
CLIP_TEMPLATES = (
    "a photo of a {}.",
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
PLACEHOLDERS = ("", "0", "label")  # field names of the one allowed placeholder: {} {0} {label}
_HOW = "put '{}' (or '{label}') where the class name goes, and '{{' / '}}' for literal braces"


def _shown(template: str) -> str:
    r = repr(template)
    return r if len(r) <= 80 else r[:77] + "..."


@lru_cache(maxsize=1024)
def _pieces(template: str) -> tuple[str, ...]:
    """The literal text between placeholders (one more piece than placeholders); raises DataError."""
    pieces, text = [], ""
    try:
        for literal, field, spec, conversion in Formatter().parse(template):
            text += literal
            if field is None:
                continue
            if field not in PLACEHOLDERS:
                raise DataError(f"template {_shown(template)}: unknown placeholder {{{field}}}; {_HOW}")
            if conversion is not None or spec:
                bad = f"!{conversion}" if conversion is not None else f":{spec}"
                raise DataError(
                    f"template {_shown(template)}: the placeholder takes no format spec or conversion "
                    f"({bad!r}); {_HOW}"
                )
            pieces.append(text)
            text = ""
    except ValueError as e:  # str.format's parser: a lone '{' or '}'
        if isinstance(e, DataError):
            raise
        raise DataError(f"template {_shown(template)}: {e}; {_HOW}") from None
    if not pieces:
        raise DataError(f"template {_shown(template)} has no '{{}}' for the class name; {_HOW}")
    pieces.append(text)
    return tuple(pieces)


def _parsed(template: str) -> tuple[str, ...]:
    if not isinstance(template, str):
        raise DataError(f"template {template!r} is not a string")
    return _pieces(template)


def check_template(template: str) -> str:
    """``template`` if it is a usable prompt template, else :class:`DataError` saying what is wrong."""
    _parsed(template)
    return template


def check_templates(templates: Sequence[str]) -> list[str]:
    """Check every template of a prompt ensemble (at least one); returns them as a list."""
    if isinstance(templates, str):
        templates = [templates]
    out = list(templates)
    if not out:
        raise DataError("no prompt templates given (e.g. 'a {}.')")
    for t in out:
        check_template(t)
    return out


def fill_template(template: str, name: str) -> str:
    """``template`` with every placeholder replaced by ``name`` (checked first; no ``str.format``)."""
    return str(name).join(_parsed(template))


def templates_for(space: Any, templates: Sequence[str] | None = None) -> list[str]:
    """The prompt templates to use with ``space``, checked: ``templates`` when given (non-empty), else the
    space's own (``space.info["templates"]``), else :data:`DEFAULT_TEMPLATES`."""
    if templates is not None and (isinstance(templates, str) or len(templates)):
        return check_templates(templates)
    own = (getattr(space, "info", None) or {}).get("templates")
    return check_templates(own if own else DEFAULT_TEMPLATES)


#: at most this many characters in one stored class description
MAX_DESCRIPTION_CHARS = 1000


def check_descriptions(descriptions: Any) -> dict[str, list[str]]:
    """Class descriptions as a mapping of class name -> list of non-empty sentences (at most
    :data:`MAX_DESCRIPTION_CHARS` characters each; a class may have none); else :class:`DataError` saying which."""
    if not isinstance(descriptions, dict):
        raise DataError(f"class descriptions are {type(descriptions).__name__}, expected a mapping of class name -> "
                        "list of sentences")
    out: dict[str, list[str]] = {}
    for name, ds in descriptions.items():
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"class descriptions: class name {name!r} is empty or not a string")
        if not isinstance(ds, list) or not all(isinstance(d, str) and d.strip() for d in ds):
            raise DataError(f"class descriptions of {_shown(name)}: expected a list of non-empty sentences")
        long = [d for d in ds if len(d) > MAX_DESCRIPTION_CHARS]
        if long:
            raise DataError(f"class descriptions of {_shown(name)}: one is {len(long[0])} characters "
                            f"(at most {MAX_DESCRIPTION_CHARS})")
        out[name] = list(ds)
    return out


def descriptions_for(space: Any, descriptions: Any = None) -> dict[str, list[str]]:
    """The class descriptions to use with ``space``, checked: ``descriptions`` when given (``{}``: none), else the
    space's own (``space.info["descriptions"]``), else none."""
    if descriptions is None:
        descriptions = (getattr(space, "info", None) or {}).get("descriptions") or {}
    return check_descriptions(descriptions)
