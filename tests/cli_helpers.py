"""Helpers for the tests that walk every ``anybind fit`` option (test_fit_method_options,
test_fit_from_pretrained_options)."""

from __future__ import annotations

import typing


def given_words(p, tmp_path) -> list[str]:
    """Command-line words giving the fit option ``p`` a value its parser takes (its default where it has one)."""
    if p.is_flag:
        return [p.opts[0]]
    kind = p.type_descriptor.annotation
    if typing.get_origin(kind) is list:
        kind = typing.get_args(kind)[0]
    if typing.get_origin(kind) is typing.Literal:
        return [p.opts[0], typing.get_args(kind)[-1]]
    if p.default is not None:  # e.g. --loss infonce, --epochs 200
        return [p.opts[0], str(p.default)]
    return [p.opts[0], "1" if kind in (int, float) else str(tmp_path / f"{p.name}.x")]
