"""General MIDI: the 128 programs with their families, and a tiny Standard MIDI File writer.

The program names and the 16 families (8 programs each) are the GM Level 1
Sound Set (MIDI Manufacturers Association, 1991).  ``spoken`` is the name as
a caption says it, ``low``/``high`` (MIDI note numbers, middle C = 60) the
instrument's usual range, from which :mod:`.instruments` picks the notes it
renders (:func:`spread_pitches`, with :func:`register_word`), :func:`caption`
the text of a clip.  Channel 10 (index 9) plays the GM percussion key map, of
which :data:`DRUM_NOTES` names a few.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DRUM_CHANNEL",
    "DRUM_NOTES",
    "GM_FAMILIES",
    "GM_PROGRAMS",
    "GMProgram",
    "caption",
    "note_name",
    "register_word",
    "spread_pitches",
    "standard_midi_file",
]

GM_FAMILIES: tuple[str, ...] = (
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass",
    "Reed", "Pipe", "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic", "Percussive", "Sound Effects",
)  # fmt: skip


@dataclass(frozen=True)
class GMProgram:
    """One General MIDI program: ``program`` is the MIDI program-change value (0-127)."""

    program: int
    name: str
    family: str
    spoken: str
    low: int
    high: int
    verb: str = "playing"  # "singing" for the voices
    plural: bool = False  # "tremolo strings playing", no article
    effect: bool = False  # a sound effect: "the sound of <spoken>"


# (GM name, spoken, low, high, verb / plural / effect flags)
_TABLE: tuple[tuple[str, str, int, int, str], ...] = (
    ("Acoustic Grand Piano", "grand piano", 36, 84, ""),
    ("Bright Acoustic Piano", "bright acoustic piano", 36, 84, ""),
    ("Electric Grand Piano", "electric grand piano", 36, 84, ""),
    ("Honky-tonk Piano", "honky-tonk piano", 36, 84, ""),
    ("Electric Piano 1", "electric piano", 36, 84, ""),
    ("Electric Piano 2", "FM electric piano", 36, 84, ""),
    ("Harpsichord", "harpsichord", 36, 84, ""),
    ("Clavi", "clavinet", 36, 84, ""),
    ("Celesta", "celesta", 60, 96, ""),
    ("Glockenspiel", "glockenspiel", 79, 108, ""),
    ("Music Box", "music box", 60, 96, ""),
    ("Vibraphone", "vibraphone", 53, 89, ""),
    ("Marimba", "marimba", 45, 96, ""),
    ("Xylophone", "xylophone", 65, 108, ""),
    ("Tubular Bells", "tubular bells", 60, 77, "plural"),
    ("Dulcimer", "dulcimer", 55, 88, ""),
    ("Drawbar Organ", "drawbar organ", 36, 84, ""),
    ("Percussive Organ", "percussive organ", 36, 84, ""),
    ("Rock Organ", "rock organ", 36, 84, ""),
    ("Church Organ", "church organ", 24, 84, ""),
    ("Reed Organ", "reed organ", 36, 84, ""),
    ("Accordion", "accordion", 41, 84, ""),
    ("Harmonica", "harmonica", 60, 84, ""),
    ("Tango Accordion", "tango accordion", 41, 84, ""),
    ("Acoustic Guitar (nylon)", "nylon-string acoustic guitar", 40, 76, ""),
    ("Acoustic Guitar (steel)", "steel-string acoustic guitar", 40, 76, ""),
    ("Electric Guitar (jazz)", "jazz electric guitar", 40, 79, ""),
    ("Electric Guitar (clean)", "clean electric guitar", 40, 84, ""),
    ("Electric Guitar (muted)", "muted electric guitar", 40, 72, ""),
    ("Overdriven Guitar", "overdriven electric guitar", 40, 84, ""),
    ("Distortion Guitar", "distorted electric guitar", 40, 84, ""),
    ("Guitar harmonics", "guitar harmonics", 52, 84, "plural"),
    ("Acoustic Bass", "acoustic bass", 28, 55, ""),
    ("Electric Bass (finger)", "fingered electric bass", 28, 60, ""),
    ("Electric Bass (pick)", "picked electric bass", 28, 60, ""),
    ("Fretless Bass", "fretless bass", 28, 60, ""),
    ("Slap Bass 1", "slap bass 1", 28, 60, ""),
    ("Slap Bass 2", "slap bass 2", 28, 60, ""),
    ("Synth Bass 1", "synth bass 1", 24, 55, ""),
    ("Synth Bass 2", "synth bass 2", 24, 55, ""),
    ("Violin", "violin", 55, 93, ""),
    ("Viola", "viola", 48, 84, ""),
    ("Cello", "cello", 36, 72, ""),
    ("Contrabass", "double bass", 28, 55, ""),
    ("Tremolo Strings", "tremolo strings", 41, 84, "plural"),
    ("Pizzicato Strings", "pizzicato strings", 36, 84, "plural"),
    ("Orchestral Harp", "harp", 36, 96, ""),
    ("Timpani", "timpani", 40, 57, "plural"),
    ("String Ensemble 1", "string ensemble", 36, 84, ""),
    ("String Ensemble 2", "slow string ensemble", 36, 84, ""),
    ("SynthStrings 1", "synth strings 1", 36, 84, "plural"),
    ("SynthStrings 2", "synth strings 2", 36, 84, "plural"),
    ("Choir Aahs", "choir", 48, 79, "singing"),
    ("Voice Oohs", "voice", 48, 79, "singing"),
    ("Synth Voice", "synth voice", 48, 79, "singing"),
    ("Orchestra Hit", "orchestra hit", 48, 72, ""),
    ("Trumpet", "trumpet", 55, 82, ""),
    ("Trombone", "trombone", 40, 72, ""),
    ("Tuba", "tuba", 28, 58, ""),
    ("Muted Trumpet", "muted trumpet", 55, 82, ""),
    ("French Horn", "French horn", 41, 77, ""),
    ("Brass Section", "brass section", 41, 79, ""),
    ("SynthBrass 1", "synth brass 1", 36, 84, ""),
    ("SynthBrass 2", "synth brass 2", 36, 84, ""),
    ("Soprano Sax", "soprano saxophone", 56, 87, ""),
    ("Alto Sax", "alto saxophone", 49, 80, ""),
    ("Tenor Sax", "tenor saxophone", 44, 75, ""),
    ("Baritone Sax", "baritone saxophone", 36, 68, ""),
    ("Oboe", "oboe", 58, 91, ""),
    ("English Horn", "English horn", 52, 81, ""),
    ("Bassoon", "bassoon", 34, 72, ""),
    ("Clarinet", "clarinet", 50, 89, ""),
    ("Piccolo", "piccolo", 74, 102, ""),
    ("Flute", "flute", 60, 96, ""),
    ("Recorder", "recorder", 60, 91, ""),
    ("Pan Flute", "pan flute", 60, 91, ""),
    ("Blown Bottle", "blown bottle", 60, 84, ""),
    ("Shakuhachi", "shakuhachi", 55, 84, ""),
    ("Whistle", "whistle", 72, 96, ""),
    ("Ocarina", "ocarina", 60, 84, ""),
    ("Lead 1 (square)", "square wave synth lead", 48, 84, ""),
    ("Lead 2 (sawtooth)", "sawtooth wave synth lead", 48, 84, ""),
    ("Lead 3 (calliope)", "calliope synth lead", 48, 84, ""),
    ("Lead 4 (chiff)", "chiff synth lead", 48, 84, ""),
    ("Lead 5 (charang)", "charang synth lead", 48, 84, ""),
    ("Lead 6 (voice)", "voice synth lead", 48, 84, ""),
    ("Lead 7 (fifths)", "fifths synth lead", 48, 84, ""),
    ("Lead 8 (bass + lead)", "bass and lead synth", 36, 72, ""),
    ("Pad 1 (new age)", "new age synth pad", 36, 84, ""),
    ("Pad 2 (warm)", "warm synth pad", 36, 84, ""),
    ("Pad 3 (polysynth)", "polysynth pad", 36, 84, ""),
    ("Pad 4 (choir)", "choir synth pad", 36, 84, ""),
    ("Pad 5 (bowed)", "bowed synth pad", 36, 84, ""),
    ("Pad 6 (metallic)", "metallic synth pad", 36, 84, ""),
    ("Pad 7 (halo)", "halo synth pad", 36, 84, ""),
    ("Pad 8 (sweep)", "sweep synth pad", 36, 84, ""),
    ("FX 1 (rain)", "rain synth effect", 48, 84, ""),
    ("FX 2 (soundtrack)", "soundtrack synth effect", 48, 84, ""),
    ("FX 3 (crystal)", "crystal synth effect", 48, 84, ""),
    ("FX 4 (atmosphere)", "atmosphere synth effect", 48, 84, ""),
    ("FX 5 (brightness)", "brightness synth effect", 48, 84, ""),
    ("FX 6 (goblins)", "goblins synth effect", 48, 84, ""),
    ("FX 7 (echoes)", "echoes synth effect", 48, 84, ""),
    ("FX 8 (sci-fi)", "sci-fi synth effect", 48, 84, ""),
    ("Sitar", "sitar", 48, 77, ""),
    ("Banjo", "banjo", 48, 84, ""),
    ("Shamisen", "shamisen", 50, 79, ""),
    ("Koto", "koto", 55, 84, ""),
    ("Kalimba", "kalimba", 60, 84, ""),
    ("Bag pipe", "bagpipe", 57, 74, ""),
    ("Fiddle", "fiddle", 55, 93, ""),
    ("Shanai", "shehnai", 60, 84, ""),
    ("Tinkle Bell", "tinkle bell", 72, 96, ""),
    ("Agogo", "agogo bells", 60, 84, "plural"),
    ("Steel Drums", "steel drums", 55, 84, "plural"),
    ("Woodblock", "woodblock", 60, 84, ""),
    ("Taiko Drum", "taiko drum", 36, 60, ""),
    ("Melodic Tom", "melodic tom", 40, 64, ""),
    ("Synth Drum", "synth drum", 40, 64, ""),
    ("Reverse Cymbal", "reverse cymbal", 48, 72, ""),
    ("Guitar Fret Noise", "guitar fret noise", 48, 72, "effect"),
    ("Breath Noise", "breath noise", 48, 72, "effect"),
    ("Seashore", "waves on a seashore", 48, 72, "effect"),
    ("Bird Tweet", "a bird tweeting", 60, 84, "effect"),
    ("Telephone Ring", "a telephone ringing", 60, 72, "effect"),
    ("Helicopter", "a helicopter", 48, 72, "effect"),
    ("Applause", "applause", 48, 72, "effect"),
    ("Gunshot", "a gunshot", 48, 72, "effect"),
)

GM_PROGRAMS: tuple[GMProgram, ...] = tuple(
    GMProgram(
        program=i,
        name=name,
        family=GM_FAMILIES[i // 8],
        spoken=spoken,
        low=low,
        high=high,
        verb="singing" if flag == "singing" else "playing",
        plural=flag == "plural",
        effect=flag == "effect",
    )
    for i, (name, spoken, low, high, flag) in enumerate(_TABLE)
)

DRUM_CHANNEL = 9
#: GM percussion key map notes (channel 10) -> what a caption calls them
DRUM_NOTES: dict[int, str] = {
    36: "bass drum",
    38: "snare drum",
    42: "closed hi-hat",
    45: "low tom",
    49: "crash cymbal",
}

def register_word(k: int, n: int) -> str:
    """The register of the ``k``-th of ``n`` notes spread over an instrument's range."""
    f = k / (n - 1) if n > 1 else 0.5
    for word, upto in (("very low", 0.15), ("low", 0.4), ("middle", 0.6), ("high", 0.85)):
        if f < upto or (word in ("middle", "high") and f == upto):
            return word
    return "very high"


def spread_pitches(p: GMProgram, n: int) -> list[tuple[int, str]]:
    """``n`` notes evenly over ``p``'s range with their register words (duplicates dropped)."""
    if n == 1:
        return [((p.low + p.high) // 2, "middle")]
    out: dict[int, str] = {}
    for k in range(n):
        out.setdefault(round(p.low + k * (p.high - p.low) / (n - 1)), register_word(k, n))
    return sorted(out.items())


def caption(p: GMProgram | None, register: str, length: str, dynamics: str) -> str:
    """The text of a clip (``p=None``: the drum kit, ``register`` = the drum sound)."""
    adverb = {"soft": "softly", "loud": "loudly"}.get(dynamics, dynamics)
    if p is None:
        return f"a drum kit playing a {register}, {adverb}"
    if p.effect:
        return f"the sound of {p.spoken}, {register}-pitched, {length} and {dynamics}"
    who = p.spoken if p.plural else f"{'an' if p.spoken[0].lower() in 'aeiou' else 'a'} {p.spoken}"
    return f"{who} {p.verb} a {length} {register} note, {adverb}"


_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def note_name(note: int) -> str:
    """``60`` -> ``C4``; ``61`` -> ``C#4`` (scientific pitch notation, middle C = C4)."""
    return f"{_NOTE_NAMES[note % 12]}{note // 12 - 1}"


def _vlq(n: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def standard_midi_file(events: Iterable[tuple[int, bytes]]) -> bytes:
    """A format-0 Standard MIDI File from ``(time in ms, MIDI message)`` pairs (stably sorted by time).

    One tick is one millisecond: 1000 ticks per quarter note at 60 bpm.
    """
    track = bytearray(_vlq(0) + b"\xff\x51\x03" + (1_000_000).to_bytes(3, "big"))  # tempo: 1 s per quarter
    now = 0
    for ms, msg in sorted(events, key=lambda e: e[0]):
        if ms < 0:
            raise ValueError(f"MIDI event at negative time {ms} ms")
        track += _vlq(ms - now) + msg
        now = ms
    track += _vlq(0) + b"\xff\x2f\x00"  # end of track
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 1000)  # format 0, one track, 1000 ticks per quarter
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)
