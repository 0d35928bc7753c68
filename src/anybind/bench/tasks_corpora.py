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


FM_TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "a black and white photo of a {}.",
    "a drawing of a {}.",
    "a product photo of a {}, a piece of clothing.",
)
#: readable class names for prompts (Fashion-MNIST's own names, slashes spelled out)
FM_NAMES = {
    "T-shirt/top": "t-shirt",
    "Trouser": "pair of trousers",
    "Pullover": "pullover sweater",
    "Dress": "dress",
    "Coat": "coat",
    "Sandal": "sandal",
    "Shirt": "shirt",
    "Sneaker": "sneaker",
    "Bag": "bag",
    "Ankle boot": "ankle boot",
}


def build_once(work: Path, name: str, builder):
    out = Path(work) / name
    if not (out / "manifest.jsonl").exists():
        builder(out, progress=False)
    return out / "manifest.jsonl"


@task(
    "fashion-mnist-zeroshot",
    "Fashion-MNIST zero-shot (prompt ensembles) with a space bound on Tux Paint + emoji + openclipart, "
    "beside chance, the training-free label bridge and the linear-probe ceiling (--opt limit=N test images)",
)
def fashion_mnist_zeroshot(work: Path, cache=None, seed: int = 0, console=None, limit: str = "10000",
                           probe_train: str = "10000") -> TaskResult:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ..corpora.emoji import build_emoji
    from ..corpora.fashion_mnist import build_fashion_mnist
    from ..corpora.openclipart import build_openclipart
    from ..data.manifest import load_manifest
    from ..evaluate import zero_shot
    from ..space import Space
    from .tuxpaint import PLAIN_ENCODERS, RECIPE, prepare_tuxpaint

    n_test, n_train = int(limit), int(probe_train)
    mods = ["image", "text"]
    sources = [
        prepare_tuxpaint(work, console),
        build_once(work, "emoji", build_emoji),
        build_once(work, "openclipart", build_openclipart),
    ]
    fm_path = build_once(work, "fashion-mnist", build_fashion_mnist)
    fm = load_manifest(fm_path, modalities=["image"], check_media=False)
    test = fm.split("test")[:n_test]
    train = fm.split("train")[:n_train]
    mans = [load_manifest(p, modalities=mods, progress=True) for p in sources]
    encs = {m: RECIPE["encoders"][m] for m in mods}
    systems = {
        "anybind (recipe, 3 corpora)": Space.fit(mans, modalities=mods, encoders=encs, cache=cache, seed=seed,
                                                 lock="text", init="ridge", progress=False, recipe="plain"),
        "anybind (recipe, Tux Paint only)": Space.fit(mans[0], modalities=mods, encoders=encs, cache=cache, seed=seed,
                                                      lock="text", init="ridge", progress=False, recipe="plain"),
        "plain InfoNCE (3 corpora)": Space.fit(mans, modalities=mods, encoders={m: PLAIN_ENCODERS[m] for m in mods},
                                               cache=cache, seed=seed, progress=False, recipe="plain"),
        "label bridge (training-free)": Space.label_bridge(),
    }
    rows, accs = [], {}
    for name, sp in systems.items():
        zs = zero_shot(sp, test, "image", "class", classes=list(FM_NAMES), names=lambda c: FM_NAMES[c],
                       templates=FM_TEMPLATES, cache=cache)
        single = zero_shot(sp, test, "image", "class", classes=list(FM_NAMES), names=lambda c: FM_NAMES[c],
                           templates=FM_TEMPLATES[:1], cache=cache)
        centred = zero_shot(sp, test, "image", "class", classes=list(FM_NAMES), names=lambda c: FM_NAMES[c],
                            templates=FM_TEMPLATES, cache=cache, center=True)
        accs[name] = zs["accuracy"]
        accs[name + " centred"] = centred["accuracy"]
        rows.append({"name": name, "accuracy": zs["accuracy"], "one prompt": single["accuracy"],
                     "centred (transductive)": centred["accuracy"]})
    # the ceiling: logistic regression on the same frozen image features, trained on Fashion-MNIST train
    from ..cache import FeatureCache
    from ..encoders.registry import get_encoder

    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    img = get_encoder(PLAIN_ENCODERS["image"])
    Xtr = fc.encode(img, [r.values["image"] for r in train], progress=True, description="probe train features")
    Xte = fc.encode(img, [r.values["image"] for r in test], progress=False)
    ytr = [r.labels["class"] for r in train]
    yte = np.array([r.labels["class"] for r in test])
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000, C=0.5).fit((Xtr - mu) / sd, ytr)
    ceiling = float((clf.predict((Xte - mu) / sd) == yte).mean())
    rows.append({"name": "linear probe (ceiling)", "accuracy": ceiling, "one prompt": None, "centred (transductive)": None})
    rows.append({"name": "chance", "accuracy": 0.1, "one prompt": 0.1, "centred (transductive)": 0.1})
    for r in rows:
        r["of ceiling"] = None if r["accuracy"] is None else r["accuracy"] / ceiling
    best = accs["anybind (recipe, 3 corpora)"]
    return TaskResult(
        metrics={"accuracy": best, "fraction_of_ceiling": best / ceiling,
                 "accuracy_centred": accs["anybind (recipe, 3 corpora) centred"],
                 "fraction_of_ceiling_centred": accs["anybind (recipe, 3 corpora) centred"] / ceiling},
        baselines={
            "label-bridge": {"accuracy": accs["label bridge (training-free)"]},
            "tuxpaint-only": {"accuracy": accs["anybind (recipe, Tux Paint only)"]},
            "plain-infonce": {"accuracy": accs["plain InfoNCE (3 corpora)"]},
            "linear-probe": {"accuracy": ceiling},
            "chance": {"accuracy": 0.1},
        },
        table=rows,
        config={"test_images": len(test), "probe_train_images": len(train), "templates": list(FM_TEMPLATES),
                "train_corpora": [str(p) for p in sources]},
        notes=[f"first {len(test)} Fashion-MNIST test images, inverted to dark-on-white; probe trained on the first "
               f"{len(train)} train images",
               "centred: the test images' mean embedding subtracted before the cosine (uses the unlabelled test batch; "
               "Fashion-MNIST sits in one corner of the space, where 'trousers' is the hub)"],
    )
