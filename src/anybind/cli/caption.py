"""``anybind caption-fit`` / ``anybind caption-modes`` / ``anybind caption``: decode captions from a space through a small frozen LM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

import typer

from ..errors import AnybindError
from ._common import app, check_out, choice, console, fail, query_items, query_pairs, seed_option, split_csv

Method = Literal["greedy", "beam", "sample"]
Projection = Literal["auto", "none", "memory"]
Mode = Literal["auto", "mapper", "prompt", "nearest"]


@app.command("caption-fit")
def caption_fit(
    space_dir: Path = typer.Argument(..., help="Saved space folder (it must bind a text modality)."),
    manifest: Path = typer.Argument(..., help="Manifest with captions (text): train split trains, val split selects."),
    out: Path = typer.Option(..., "--out", help="Folder to save the captioner to (new or empty, see --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the captioner already saved at --out."),
    lm: str = typer.Option("smollm2", "--lm", help="Frozen LM: smollm2 (SmolLM2-135M-Instruct), a .gguf file, "
                           "or a transformers folder."),
    noise: Optional[float] = typer.Option(None, "--noise", help="Std of the Gaussian noise on the training "
                                          "embeddings (default: chosen on val from --noise-grid)."),
    noise_grid: str = typer.Option("0,0.025,0.05,0.1", "--noise-grid", help="Comma-separated noise levels to try."),
    select_on: Optional[str] = typer.Option(None, "--select-on", help="Modality whose val pairs choose the noise "
                                            "and the epoch (default: the first non-text one)."),
    paired: bool = typer.Option(False, "--paired", help="Train on the --select-on embeddings of the train pairs "
                                "instead of the captions' text embeddings (the supervised comparison)."),
    prefix_len: int = typer.Option(8, "--prefix-len", help="Soft tokens per space vector."),
    hidden: int = typer.Option(512, "--hidden", help="Inner width of the mapper MLP."),
    epochs: int = typer.Option(10, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: str = typer.Option("2e-3", "--lr", help="Learning rate, or comma-separated rates chosen on val (each "
                           "tried at one noise level first, then the noise grid at the best)."),
    seed: int = seed_option(),
    projection: Projection = choice("auto", Projection, "--projection", help="Decode a non-text embedding as it "
                                    "is (none) or projected onto the memory of training caption embeddings (memory, "
                                    "DeCap); auto: the one with the lower val NLL."),
    memory_temperature: Optional[float] = typer.Option(None, "--memory-temperature", help="Softmax temperature of "
                                                       "the memory projection (default: chosen on val)."),
    retrieval_k: str = typer.Option("0", "--retrieval-k", help="Nearest training captions put in the LM's prompt "
                                    "(SmallCap), or comma-separated values chosen on val; 0: the mapper alone."),
    max_train: int = typer.Option(0, "--max-train", help="Train the mapper on a seeded sample of at most this many "
                                  "train captions (0: all); the retrieval memory keeps all."),
    choose_n: int = typer.Option(32, "--choose-n", help="Val items per modality captioned to choose its default "
                                 "mode (mapper, training-free prompt or nearest caption, by CIDEr-D); 0: all; "
                                 "-1: no choice (the mapper)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder."),
):
    """Train a captioner for a space, text-only: each caption is decoded from its own noised text embedding.

    Example:  anybind caption-fit spaces/tux data/tux/manifest.jsonl --out models/tux-cap
    """
    from ..caption import fit_captioner
    from ..space import Space

    check_out(out, "captioner", overwrite)
    try:
        grid = tuple(float(x) for x in split_csv(noise_grid) or [])
    except ValueError:
        fail(ValueError(f"--noise-grid takes comma-separated numbers, got {noise_grid!r}"))
    try:
        lrs = tuple(float(x) for x in split_csv(lr) or [])
    except ValueError:
        fail(ValueError(f"--lr takes a number or comma-separated numbers, got {lr!r}"))
    try:
        ks = tuple(int(x) for x in split_csv(retrieval_k) or [])
    except ValueError:
        fail(ValueError(f"--retrieval-k takes a whole number or comma-separated ones, got {retrieval_k!r}"))
    try:
        space = Space.load(space_dir)
        cap = fit_captioner(space, manifest, lm, cache=cache, noise=noise, noise_grid=grid, select_on=select_on,
                            paired=paired, prefix_len=prefix_len, hidden=hidden, epochs=epochs,
                            batch_size=batch_size, lr=lrs[0] if len(lrs) == 1 else lrs, seed=seed,
                            projection=None if projection == "auto" else projection,
                            memory_temperature=memory_temperature, max_train=max_train,
                            choose_n=None if choose_n < 0 else choose_n,
                            retrieval_k=ks[0] if len(ks) == 1 else ks)
        cap.save(out, overwrite=overwrite)
    except (AnybindError, ValueError) as e:
        fail(e)
    nll = ", ".join(f"{s}: {_nll(v)}" for s, v in cap.info["noise_val_nll"].items())
    console.print(f"saved {out}: {cap.info['n_train']} captions, noise {cap.noise_std:g} chosen on "
                  f"{cap.info['selected_on']} ({nll}), {cap.info['seconds']:.0f} s", highlight=False)
    if cap.info["lr_val_nll"]:
        ln = ", ".join(f"{k}: {_nll(v)}" for k, v in cap.info["lr_val_nll"].items())
        console.print(f"lr {cap.info['lr']:g} chosen on val at noise {cap.info['lr_selected_at_noise']:g} ({ln})",
                      highlight=False)
    pn = ", ".join(f"{k}: {_nll(v)}" for k, v in cap.info["projection_val_nll"].items())
    console.print(f"projection {cap.projection} (memory of {len(cap.memory)} captions, temperature "
                  f"{cap.memory_temperature:g}) chosen on val ({pn})", highlight=False)
    for m, c in cap.modes.items():
        sc = ", ".join(f"{k} {v:.3f}" for k, v in c["val_cider_d"].items())
        console.print(f"{m}: captioned by {c['mode']} by default, chosen on {c['n_val']} val items (CIDEr-D: {sc})",
                      highlight=False)
    if choose_n >= 0:  # a modality without captioned val items: no choice was possible, and the CLI says so
        for m in (m for m in cap.space.modalities if m != cap.text and m not in cap.modes):
            console.print(f"{m}: captioned by mapper by default (no val items with a caption to choose on)",
                          highlight=False)
    if len(cap.info["retrieval_val_nll"]) > 1 or cap.retrieval_k:
        kn = ", ".join(f"{k}: {_nll(v)}" for k, v in cap.info["retrieval_val_nll"].items())
        fn = ", ".join(f"{k}: {_nll(v)}" for k, v in cap.info["training_free_val_nll"].items())
        console.print(f"retrieval k {cap.retrieval_k} chosen on val ({kn}; the frozen LM alone with the retrieved "
                      f"captions: {fn or '-'})", highlight=False)


@app.command("caption-modes")
def caption_modes(
    captioner: Path = typer.Argument(..., help="Saved captioner folder (from anybind caption-fit); updated in place."),
    manifest: Path = typer.Argument(..., help="Manifest with captions (text) whose val split chooses the modes."),
    modality: Optional[list[str]] = typer.Option(None, "--modality", help="Modality to choose for (repeatable; "
                                                 "default: every bound non-text one with captioned val items)."),
    choose_n: int = typer.Option(32, "--choose-n", help="Val items per modality captioned (a seeded sample; 0: all)."),
    max_tokens: int = typer.Option(20, "--max-tokens", help="Greedy decoding's token cap while choosing (caption-fit's)."),
    seed: int = seed_option(),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder."),
):
    """Choose each modality's default caption mode on val again (mapper, training-free prompt or nearest caption,
    by CIDEr-D), under the prompt wording this anybind decodes it with; no retraining.  The captioner is saved back
    in place (an atomic swap) with the new choices and the wording they were chosen under.

    Example:  anybind caption-modes models/tux-cap data/tux/manifest.jsonl
    """
    from ..caption import Captioner
    from ..caption.choice import choose_modes

    if choose_n < 0:
        fail(ValueError(f"--choose-n {choose_n}: give 0 (all) or more val items"))
    try:
        cap = Captioner.load(captioner)
        got = choose_modes(cap, manifest, modality or None, n=choose_n, seed=seed, cache=cache, method="greedy",
                           max_tokens=max_tokens)
        if got:
            cap.save(captioner, overwrite=True)
    except (AnybindError, ValueError) as e:
        fail(e)
    for m, c in got.items():
        sc = ", ".join(f"{k} {v:.3f}" for k, v in c["val_cider_d"].items())
        console.print(f"{m}: captioned by {c['mode']} by default, chosen on {c['n_val']} val items (CIDEr-D: {sc})",
                      highlight=False)
    left = [m for m in (modality or cap.space.modalities) if m != cap.text and m not in got]
    for m in left:
        console.print(f"{m}: not chosen again (no val items with a caption in {manifest}); stays "
                      f"{cap.mode_for(m)}", highlight=False)
    console.print(f"saved {captioner}" if got else f"{captioner}: unchanged (nothing chosen)", highlight=False)


@app.command("caption")
def caption_cmd(
    captioner: Path = typer.Argument(..., help="Saved captioner folder (from anybind caption-fit)."),
    image: Optional[list[str]] = typer.Option(None, "--image", help="Image file(s) to caption (repeatable)."),
    audio: Optional[list[str]] = typer.Option(None, "--audio", help="Sound file(s)."),
    speech: Optional[list[str]] = typer.Option(None, "--speech", help="Speech recording(s)."),
    text: Optional[list[str]] = typer.Option(None, "--text", help="Text(s): decoded back from their embedding."),
    item: Optional[list[str]] = typer.Option(None, "--item", help="MODALITY=VALUE for any other bound modality."),
    space_dir: Optional[Path] = typer.Option(None, "--space", help="The space (default: the captioner's copy)."),
    method: Method = choice("greedy", Method, "--method", help="Decoding: greedy, beam search, or sampling."),
    beams: int = typer.Option(3, "--beams", help="Beam width (--method beam)."),
    max_tokens: int = typer.Option(24, "--max-tokens", help="At most this many tokens per caption."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (--method sample)."),
    top_p: float = typer.Option(0.9, "--top-p", help="Nucleus mass (--method sample)."),
    seed: int = seed_option("Sampling seed."),
    projection: Optional[str] = typer.Option(None, "--projection", help="none or memory (DeCap projection onto "
                                             "the training captions' embeddings); default: the captioner's own."),
    retrieval_k: Optional[int] = typer.Option(None, "--retrieval-k", help="Nearest training captions in the "
                                              "prompt; default: the captioner's own (chosen on val)."),
    no_prefix: bool = typer.Option(False, "--no-prefix", help="Leave the mapper out: the frozen LM decodes from "
                                   "the retrieved captions alone (training-free; needs --retrieval-k > 0)."),
    mode: Mode = choice("auto", Mode, "--mode", help="What decodes: auto (per modality, the mode chosen on val at "
                        "caption-fit), mapper (the trained prefix mapper), prompt (the frozen LM prompted with the "
                        "nearest training captions) or nearest (the nearest training caption itself)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON lines {modality, item, caption}."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder."),
):
    """Caption images, sounds, speech or texts through a captioner.

    Example:  anybind caption models/tux-cap --image bear.png --audio moo.ogg --method beam
    """
    from ..caption import Captioner
    from ..space import Space

    pairs = [(mod, v) for mod, vals in (("image", image), ("audio", audio), ("speech", speech), ("text", text))
             for v in vals or []]
    items = query_pairs(item, "--item")
    if not pairs and not items:
        fail(ValueError("nothing to caption: give --image, --audio, --speech, --text or --item MODALITY=VALUE"))
    try:
        cap = Captioner.load(captioner, Space.load(space_dir) if space_dir else None)
        asked: dict[str, list[tuple[Any, str]]] = {}  # modality -> (item, its name): a .npy of features read
        for mod, it, name in [(m, v, v) for m, v in pairs] + query_items(cap.space, items, "--item"):
            asked.setdefault(mod, []).append((it, name))
        for mod in asked:
            if mod not in cap.space.modalities:
                fail(AnybindError(f"--{mod}: the space binds no {mod!r} modality (bound: {', '.join(cap.space.modalities)})"))
        gen = dict(method=method, beams=beams, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                   projection=projection, retrieval_k=retrieval_k, prefix=not no_prefix,
                   mode="mapper" if no_prefix and mode == "auto" else mode)
        results = [(m, name, c) for m, its in asked.items()
                   for (_, name), c in zip(its, cap.caption(m, [it for it, _ in its], cache=cache, **gen))]
    except (AnybindError, ValueError) as e:
        fail(e)
    for m, v, c in results:
        if json_out:
            console.print(json.dumps({"modality": m, "item": v, "caption": c}), highlight=False, markup=False)
        else:
            console.print(f"{m}\t{v}\t{c}", highlight=False, markup=False)


def _nll(v: float | None) -> str:
    """A val NLL as shown (None: that run diverged)."""
    return "diverged" if v is None else f"{v:.3f}"
