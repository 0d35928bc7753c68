"""The retrieval prompt names what was searched (issue 18): a sound is decoded after "Similar sounds are of:", a
spoken caption after "Similar recordings say:", never after "Similar images show:", which told the frozen LM that
the retrieved captions described pictures.  The corpus and captioner: tests/caption_fixtures.py."""

import json

import pytest
from fastapi.testclient import TestClient

from anybind import Space
from anybind.caption import Captioner, MapperConfig, PrefixMapper
from anybind.caption import model as cap_model
from anybind.caption.retrieval import PROMPT, caption_text, prompt_markers

from caption_fixtures import TEXT


def _spy(monkeypatch) -> list[str]:
    """The templates the captioner builds its LM prompts with, in call order."""
    seen: list[str] = []
    real = cap_model.prompt_ids

    def spy(lm, rows, captions, template=PROMPT):
        seen.append(template)
        return real(lm, rows, captions, template)

    monkeypatch.setattr(cap_model, "prompt_ids", spy)
    return seen


@pytest.fixture(scope="module")
def sound_and_speech(corpus):
    """A space binding text, "audio" and "speech" (the corpus' scene vectors under both names) and a captioner
    over it with a memory of the train captions (retrieval k=2)."""
    tmp, _, _, lm, recs = corpus
    man = tmp / "sound-speech.jsonl"
    man.write_text("".join(json.dumps({"id": r["id"], "split": r["split"], "text": r["text"], "audio": r["id"],
                                       "speech": r["id"]}) + "\n" for r in recs))
    vec = f"vectors:{tmp / 'sketch.npz'}"
    space = Space.fit(man, encoders={"text": TEXT, "audio": vec, "speech": vec}, cache=tmp / "c-ss", epochs=20,
                      dim=16, hidden=32, progress=False, seed=0)
    caps = sorted({r["text"] for r in recs if r["split"] == "train"})
    mem = space.embed("text", caps, cache=tmp / "c-ss")
    cap = Captioner(space, lm, PrefixMapper(MapperConfig(16, lm.hidden_size, 4, 32)), memory=mem,
                    memory_captions=caps, retrieval_k=2)
    test = [r["id"] for r in recs if r["split"] == "test"][:3]
    return cap, test, tmp / "c-ss"


@pytest.mark.parametrize("mode", ["prompt", "mapper"])
def test_sound_and_speech_queries_are_not_called_images(sound_and_speech, monkeypatch, mode):
    cap, test, cache = sound_and_speech
    seen = _spy(monkeypatch)
    out = {m: cap.caption(m, test, cache=cache, mode=mode, max_tokens=4) for m in ("audio", "speech")}
    assert len(seen) == 2 and not any("image" in t for t in seen)
    assert seen[0].startswith("Similar sounds are of:\n") and seen[1].startswith("Similar recordings say:\n")
    assert all(len(v) == len(test) for v in out.values())
    # decode without a modality keeps the prompt as trained
    seen.clear()
    cap.decode(cap.space.embed("audio", test, cache=cache), mode=mode, max_tokens=4)
    assert seen == [PROMPT]


def test_the_nearest_mode_builds_no_prompt(sound_and_speech, monkeypatch):
    cap, test, cache = sound_and_speech
    seen = _spy(monkeypatch)
    assert cap.caption("audio", test, cache=cache, mode="nearest", max_tokens=4)
    assert seen == []


def test_prompt_for_names_the_base_modality_and_keeps_a_captioners_own_template():
    from anybind.caption.retrieval import OTHER_PROMPT, PROMPTS, prompt_for

    assert prompt_for(PROMPT, "sketch") == OTHER_PROMPT and "image" not in OTHER_PROMPT
    assert prompt_for(PROMPT, "speech_de") == PROMPTS["speech"]
    assert prompt_for(PROMPT, "audio") == PROMPTS["audio"] and prompt_for(PROMPT, "image") == PROMPT
    own = "Nearby:\n{captions}\nHere:\n"
    assert prompt_for(own, "audio") == own  # a captioner's own template: its words are its trainer's
    assert prompt_for(PROMPT, None) == PROMPT


@pytest.mark.parametrize("modality", ["image", "video", "audio", "speech", "text", "sketch"])
def test_each_wording_is_stripped_from_captions(modality):
    """The stop/strip rule works with every wording: its own words never end up in a caption."""
    from anybind.caption.retrieval import prompt_for

    t = prompt_for(PROMPT, modality)
    first, last = prompt_markers(t)[-1], prompt_markers(t)[0]
    assert {first, last} == {" ".join(x.split()) for x in t.replace("{captions}", "\n").split("\n") if x.strip()}
    assert caption_text(f"{last} Two red stars.", t) == "Two red stars."
    assert caption_text(f"\n{first}\nTwo red stars. {last} One blue circle.", t) == "Two red stars."


def test_the_service_names_a_stored_item_and_a_text_by_their_modalities(monkeypatch, tmp_path_factory):
    """POST /caption (the page's caption button on a result, and texts) decodes each input with its modality's
    prompt: a stored image's says images, a text's says texts."""
    from anybind.serve import ServeConfig, Service, create_app
    from caption_serve_data import caption_site

    site = caption_site(tmp_path_factory.mktemp("caption-site"))
    svc = Service.load(site["space"], site["index"], cache=site["cache"], config=ServeConfig(max_files=4))
    try:
        cap = Captioner.load(site["captioner"], svc.space, lm=site["lm"])
        cap.retrieval_k = 2
        rec = next(r for r in site["records"] if r["split"] == "test")
        seen = _spy(monkeypatch)
        with TestClient(create_app(service=svc, captioner=cap)) as client:
            r = client.post("/caption", json={"items": [{"id": rec["id"], "modality": "image"}],
                                              "texts": ["Two red stars."], "mode": "mapper", "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert [c["modality"] for c in r.json()["captions"]] == ["image", "text"]
        assert [t.split("\n")[0] for t in seen] == ["Similar images show:", "Similar texts say:"]
    finally:
        svc.close()
