"""Zero-shot prompt ensembles stored with a space and chosen for it on held-out labelled records (issue 16)."""

import json

import numpy as np
import pytest

from anybind import Space
from anybind.data.templates import fill_template
from anybind.encoders.base import get_encoder
from anybind.errors import DataError, SpaceError
from anybind.evaluate import zero_shot
from anybind.prompts import choose_templates, selection_sets, template_scores

from toy_spaces import photo_space

CLASSES = ["dog", "bicycle", "violin", "mountain", "teapot", "lighthouse"]
GOOD = "a watercolour of a {} at the beach."
#: a zebra-dominated wording first, so that a chooser that keeps the first candidate on ties is caught
CANDIDATES = ["zebra zebra zebra zebra zebra zebra {}", GOOD, "a photo of a {}.", "a {}."]


def _space(tmp_path, n_val=300, n_test=60, seed=0, test_noise=None):
    """A text-aligned toy space: each 'photo' is the text embedding of ``GOOD`` filled with its class, plus
    noise; val and test records.  ``test_noise``: replace test photos by pure noise and shuffle their labels."""
    txt = get_encoder("text:minilm")
    E = txt.encode([fill_template(GOOD, c) for c in CLASSES])
    rng = np.random.default_rng(seed)
    ids, vecs, lines = [], [], []
    for split, n in (("val", n_val), ("test", n_test)):
        for i in range(n):
            c = i % len(CLASSES)
            v = E[c] + 0.3 * rng.normal(size=E.shape[1])
            lab = CLASSES[c]
            if split == "test" and test_noise is not None:
                v = rng.normal(size=E.shape[1]) * test_noise
                lab = CLASSES[(c + 1 + i) % len(CLASSES)]
            ids.append(f"{split}{i}")
            vecs.append(v)
            lines.append({"id": f"{split}{i}", "split": split, "photo": True, "labels": {"kind": f"things/{lab}"}})
    return photo_space(tmp_path, ids, vecs, lines)


def test_stored_templates_round_trip_and_are_used_unless_templates_are_given(tmp_path):
    space, man = _space(tmp_path)
    assert space.templates == ["a {}."] and "templates" not in space.info  # nothing stored: as before
    recs = man.split("test")
    default = zero_shot(space, recs, "photo", "kind", cache=tmp_path / "c")
    space.set_templates(["zebra zebra zebra zebra zebra zebra {}"])
    stored = zero_shot(space, recs, "photo", "kind", cache=tmp_path / "c")
    explicit = zero_shot(space, recs, "photo", "kind", templates=["a {}."], cache=tmp_path / "c")
    assert stored["confusion"] != default["confusion"]  # the stored prompts are what zero-shot used
    assert explicit["confusion"] == default["confusion"]  # explicit templates override the stored ones
    loaded = Space.load(space.save(tmp_path / "sp"))
    assert loaded.templates == ["zebra zebra zebra zebra zebra zebra {}"]
    assert loaded.identity() == space.identity()  # prompts change no embedding: indexes stay valid
    assert loaded.info["lineage"][-1]["event"] == "templates"
    assert zero_shot(loaded, recs, "photo", "kind", cache=tmp_path / "c")["confusion"] == stored["confusion"]
    again = json.loads((Space.load(loaded.save(tmp_path / "sp2")).save(tmp_path / "sp3") / "space.json").read_text())
    assert again["info"]["templates"] == ["zebra zebra zebra zebra zebra zebra {}"]


def test_a_space_saved_without_templates_loads_unchanged(tmp_path):
    from pathlib import Path

    old = Space.load(Path(__file__).parent / "fixtures" / "space_v1")  # saved before templates existed
    assert old.templates == ["a {}."] and "templates" not in old.info
    space, _ = _space(tmp_path)
    meta = json.loads((space.save(tmp_path / "sp") / "space.json").read_text())
    assert "templates" not in meta["info"]
    assert Space.load(tmp_path / "sp").templates == ["a {}."]


@pytest.mark.parametrize("bad, message", [
    (["no placeholder here"], "has no '{}'"),
    ([], "no prompt templates given"),
    (["a {}.", "{x} thing"], "unknown placeholder"),
    (["a {}.", 3], "is not a string"),
    ("a {}.", "expected a list"),
])
def test_bad_templates_are_refused_in_one_line(tmp_path, bad, message):
    space, _ = _space(tmp_path)
    if not isinstance(bad, str):
        with pytest.raises(DataError, match=message) as e:
            space.set_templates(bad)
        assert "\n" not in str(e.value)
    assert "templates" not in space.info  # nothing stored by a refused call
    folder = space.save(tmp_path / "sp")
    meta = json.loads((folder / "space.json").read_text())
    meta["info"]["templates"] = bad
    (folder / "space.json").write_text(json.dumps(meta))
    with pytest.raises(SpaceError, match=message) as e:
        Space.load(folder)
    assert str(e.value).startswith(str(folder / "space.json")) and "info.templates" in str(e.value)
    assert "\n" not in str(e.value)
    space.info["templates"] = bad  # edited by hand: never saved
    with pytest.raises(SpaceError, match=message):
        space.save(tmp_path / "sp4")


def test_the_chooser_adds_the_best_candidate_while_the_score_rises_and_records_it(tmp_path):
    space, man = _space(tmp_path)
    sets = selection_sets([man], "kind", modality="photo")
    single = {t: template_scores(space, sets, [t], cache=tmp_path / "c")[sets[0].name] for t in CANDIDATES}
    choice = space.choose_templates(man, "kind", candidates=CANDIDATES, modality="photo", cache=tmp_path / "c")
    best = max(CANDIDATES, key=lambda t: single[t])  # the first of equal scores
    assert single[CANDIDATES[0]] < single[best]  # the zebra wording is not the best: a first-candidate pick fails
    assert choice.templates[0] == best and choice.steps[0] == (best, pytest.approx(single[best]))
    assert [s for _, s in choice.steps] == sorted({s for _, s in choice.steps})  # each step strictly raises it
    assert choice.score == choice.steps[-1][1] >= max(single.values()) >= choice.before == single["a {}."]
    assert space.templates == choice.templates
    assert choice.score == pytest.approx(template_scores(space, sets, choice.templates, cache=tmp_path / "c")[sets[0].name])
    entry = space.info["lineage"][-1]
    assert entry["event"] == "templates" and entry["templates"] == choice.templates
    chosen_on = entry["chosen"]["chosen_on"]
    assert chosen_on[0]["split"] == "val" and chosen_on[0]["records"] == 300 and chosen_on[0]["label"] == "kind"
    assert Space.load(space.save(tmp_path / "sp")).info["lineage"][-1] == json.loads(json.dumps(entry))


def test_the_chooser_never_reads_the_test_records(tmp_path):
    """Test photos replaced by noise and their labels shuffled: the same choice, scores and fingerprint; the
    val records edited the same way change the score (so the check can fail)."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    sa, ma = _space(tmp_path / "a")
    sb, mb = _space(tmp_path / "b", test_noise=5.0)
    assert [r.labels for r in ma.split("test")] != [r.labels for r in mb.split("test")]
    ca = sa.choose_templates(ma, "kind", candidates=CANDIDATES, modality="photo", cache=tmp_path / "c")
    cb = sb.choose_templates(mb, "kind", candidates=CANDIDATES, modality="photo", cache=tmp_path / "c")
    assert ca.templates == cb.templates and ca.steps == cb.steps
    assert list(ca.per_set.values()) == list(cb.per_set.values())
    assert [{**x, "name": ""} for x in ca.sets] == [{**x, "name": ""} for x in cb.sets]  # the same fingerprint
    with pytest.raises(DataError, match="never chosen on a test split"):
        sa.choose_templates(ma, "kind", split="test", candidates=CANDIDATES)
    with pytest.raises(DataError, match="includes the test split"):
        sa.choose_templates(ma, "kind", split="all", candidates=CANDIDATES)
    # the val records are what it reads: shuffled val labels move the score
    shuffled = [r for r in ma.split("val")]
    for r, lab in zip(shuffled, [r.labels["kind"] for r in shuffled][1:] + [shuffled[0].labels["kind"]]):
        r.labels = {"kind": lab}
    cs = choose_templates(sa, selection_sets([ma], "kind", modality="photo"), CANDIDATES, cache=tmp_path / "c")
    assert cs.score < ca.score - 0.3 and cs.sets[0]["fingerprint"] != ca.sets[0]["fingerprint"]


def test_the_cli_shows_sets_and_chooses_a_spaces_prompts(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    space, _ = _space(tmp_path)
    folder = space.save(tmp_path / "sp")

    def cli(*args):
        return CliRunner().invoke(app, ["prompts", str(folder), *args, "--cache", str(tmp_path / "c")])

    res = cli()
    assert res.exit_code == 0 and res.output.strip() == "a {}."
    res = cli("--template", "no slot")
    assert res.exit_code == 2 and "has no '{}'" in res.output and len(res.output.strip().splitlines()) == 1
    assert Space.load(folder).templates == ["a {}."]  # nothing saved by a refused call
    res = cli("--template", "a {}!", "--template", "the {}.")
    assert res.exit_code == 0, res.output
    assert Space.load(folder).templates == ["a {}!", "the {}."]
    res = cli("--choose-on", str(tmp_path / "m.jsonl"), "--label", "kind", "--modality", "photo",
              *[x for t in CANDIDATES for x in ("--candidate", t)])
    assert res.exit_code == 0, res.output
    loaded = Space.load(folder)
    assert loaded.templates == space.choose_templates(tmp_path / "m.jsonl", "kind", candidates=CANDIDATES,
                                                      modality="photo", cache=tmp_path / "c").templates
    assert loaded.info["lineage"][-1]["chosen"]["chosen_on"][0]["records"] == 300
    res = cli("--choose-on", str(tmp_path / "m.jsonl"), "--label", "kind", "--split", "test")
    assert res.exit_code == 2 and "never chosen on a test split" in res.output


def test_a_choice_that_does_not_beat_the_spaces_own_templates_is_not_taken(tmp_path):
    """The space already has a good wording (as an imported CLIP pair has its ensemble) and only zebra wordings
    are candidates: the greedy choice scores lower on the selection set, so the space keeps its own templates, the
    lineage records the choice as kept, and the CLI says so in one line and leaves the templates as they were."""
    from typer.testing import CliRunner

    from anybind.cli import app

    space, man = _space(tmp_path)
    space.set_templates([GOOD])
    others = [CANDIDATES[0], "zebra {} zebra", "a zebra and a {}."]
    sets = selection_sets([man], "kind", modality="photo")
    choice = space.choose_templates(man, "kind", candidates=others, modality="photo", cache=tmp_path / "c")
    assert choice.score < choice.before == pytest.approx(template_scores(space, sets, [GOOD], cache=tmp_path / "c")[sets[0].name])
    assert choice.templates and choice.templates != [GOOD]  # it chose something ...
    assert space.templates == [GOOD]  # ... and the space kept its own
    assert choice.kept and choice.stored == [GOOD]
    entry = space.info["lineage"][-1]
    assert entry["event"] == "templates" and entry["templates"] == [GOOD] and entry["chosen"]["kept"] is True
    assert entry["chosen"]["score"] < entry["chosen"]["score_before"]
    folder = space.save(tmp_path / "sp")
    res = CliRunner().invoke(app, ["prompts", str(folder), "--choose-on", str(tmp_path / "m.jsonl"), "--label", "kind",
                                   "--modality", "photo", *[x for t in others for x in ("--candidate", t)],
                                   "--cache", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert len([line for line in res.output.splitlines() if line.startswith("kept the space's own 1 template")]) == 1
    loaded = Space.load(folder)
    assert loaded.templates == [GOOD] and loaded.info["lineage"][-1]["chosen"]["kept"] is True
    # a choice that beats the space's templates still replaces them
    loaded.set_templates(["zebra {} zebra"])
    better = loaded.choose_templates(man, "kind", candidates=CANDIDATES, modality="photo", cache=tmp_path / "c")
    assert not better.kept and better.score > better.before and loaded.templates == better.templates


def test_template_scores_are_zero_shots_balanced_accuracy(tmp_path):
    """The chooser's score is evaluate.zero_shot's classification on the selection records, balanced: the mean of
    the confusion matrix's per-class recall, for the space's own templates and for an ensemble."""
    space, man = _space(tmp_path, n_val=90, seed=2)
    sets = selection_sets([man], "kind", modality="photo")
    for tpl in (None, CANDIDATES[:3]):
        conf = np.array(zero_shot(space, man.split("val"), "photo", "kind", templates=tpl, cache=tmp_path / "c")["confusion"])
        expected = float(np.mean(np.diag(conf) / conf.sum(1)))
        assert template_scores(space, sets, tpl, cache=tmp_path / "c")[sets[0].name] == pytest.approx(expected)
    assert 0 < expected < 1  # neither trivially right nor wrong: the check can fail
