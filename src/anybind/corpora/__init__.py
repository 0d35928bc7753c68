"""Corpora built from packaged data (Debian packages, PyPI packages), one module each.

* :mod:`.tuxpaint` -- Tux Paint stamps: image, captions in ~80 languages, sounds, speech.
* :mod:`.emoji` -- Noto Color Emoji: every single-code-point emoji drawn, its name, group/subgroup.
* :mod:`.ktuberling` -- KTuberling's sprites cut from SVG scenes, their word, human recordings in 23 languages.
* :mod:`.openclipart` -- Open Clip Art SVGs with cleaned titles and keywords.
* :mod:`.icons` -- icons of five freedesktop icon themes (Papirus, Breeze, Faenza, Numix, Tango) drawn, their
  names as captions when every word of the name is English.
* :mod:`.fashion_mnist` -- Fashion-MNIST, evaluation only (``corpus.json`` ``eval_only``).
* :mod:`.sounds` -- freedesktop event sounds and farm-animal sounds.
* :mod:`.tuxpaint_video` -- Tux Paint stamps panning, zooming or fading in as short captioned H.264 clips.
* :mod:`.speech` -- Tux Paint captions spoken by espeak-ng, voices disjoint between train/val/test, + images.
* :mod:`.timeseries` -- UCR/UEA labelled time series bundled in aeon (BasicMotions...), class described as text.
* :mod:`.instruments` -- the 128 General MIDI instruments (+ drum kit) rendered by FluidSynth, captioned.

Each writes ``manifest.jsonl``, ``corpus.json``, ``LICENSE`` and ``SOURCE.md``
(see :mod:`._build`); :func:`read_corpus_meta` / :func:`is_eval_only` read
``corpus.json`` back from a manifest path.
"""

from ._build import is_eval_only, read_corpus_meta

__all__ = ["is_eval_only", "read_corpus_meta"]
