"""Zero-shot transfer to corpora the space never saw (issue 3)."""

from __future__ import annotations

from pathlib import Path

from . import TaskResult, task
from .tuxpaint import compare_on_tuxpaint

SOUND_TEMPLATES = ("{}", "the sound of {}.", "a recording of {}.")


@task("sounds-zeroshot", "Animal and event sounds classified through text by a space whose sound projector saw only Tux Paint")
def sounds_zeroshot(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    from ..corpora.sounds import build_sounds
    from ..data.manifest import load_manifest
    from ..evaluate import zero_shot

    out = Path(work) / "sounds"
    if not (out / "manifest.jsonl").exists():
        build_sounds(out, progress=False)
    sounds = load_manifest(out / "manifest.jsonl", modalities=["audio", "text"])
    space, proc, _, _ = compare_on_tuxpaint(work, cache=cache, seed=seed, console=console)
    desc = {r.labels["name"]: r.values["text"] for r in sounds.records}  # "dog" -> "dog barking"
    groups = {
        "animals": [r for r in sounds.records if r.labels.get("category") == "animals"],
        "events": [r for r in sounds.records if r.labels.get("category") != "animals"],
        "all": list(sounds.records),
    }
    rows, metrics, base = [], {}, {"procrustes": {}, "chance": {}}
    for g, recs in groups.items():
        res = {}
        for name, sp in (("anybind", space), ("procrustes", proc)):
            zs = zero_shot(sp, recs, "audio", "name", names=lambda c: desc[c], templates=SOUND_TEMPLATES, cache=cache)
            res[name] = zs
        n_cls = res["anybind"]["classes"]
        metrics[f"{g}/accuracy"] = res["anybind"]["accuracy"]
        base["procrustes"][f"{g}/accuracy"] = res["procrustes"]["accuracy"]
        base["chance"][f"{g}/accuracy"] = 1.0 / n_cls
        rows.append({"name": f"{g} ({n_cls}-way, {len(recs)} sounds)", "anybind": res["anybind"]["accuracy"],
                     "procrustes": res["procrustes"]["accuracy"], "chance": 1.0 / n_cls})
    return TaskResult(
        metrics=metrics,
        baselines=base,
        table=rows,
        config={"templates": list(SOUND_TEMPLATES), "space": space.config, "train_corpus": "tuxpaint (124 sound effects)"},
        notes=["every sound is its own class; prompts are the corpus' descriptions ('dog barking') in 3 templates"],
    )
