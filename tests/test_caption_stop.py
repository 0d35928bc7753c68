"""The stop and strip rule of decoding (anybind.caption.retrieval.caption_text / generate_captions): the prompt's own
words ("This one shows:"), which an LM going on with the prompt's pattern writes, never end up in a caption, and a
line without a caption does not end decoding."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.caption.retrieval import PROMPT, caption_text, generate_captions, lead_embeddings, prompt_markers


def test_prompt_markers_are_the_prompts_own_lines():
    assert prompt_markers(PROMPT) == ["Similar images show:", "This one shows:"]
    assert prompt_markers("Like  these:\n{captions}\n-\n:\nNow yours: ") == ["Like these:", "Now yours:"]
    assert prompt_markers("{captions}") == []


@pytest.mark.parametrize("generated,want", [
    ("A bear.", "A bear."),
    ("A bear.\nA cat.", "A bear."),  # the first line
    ("A bear. This one shows: a cat.", "A bear."),  # the caption ends where the prompt's words start
    ("This one shows: A bear.", "A bear."),  # leading prompt words dropped
    ("this  ONE\tshows: similar images show: A bear.", "A bear."),  # any case and spacing, repeated
    ("This one shows:\nA bear.\nA cat.", "A bear."),  # a line of prompt words alone holds no caption
    ("\n\nA bear.", "A bear."),  # nor does a blank one
    ("This one shows:", ""),
    ("Ethis one shows: a dog", "Ethis one shows: a dog"),  # inside a word: not the marker
    ("A bear shows: honey", "A bear shows: honey"),
])
def test_caption_text_strips_the_prompts_words(generated, want):
    assert caption_text(generated) == want


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abc XY.\n:", max_size=30), st.text(alphabet="abc XY.\n:", max_size=30))
def test_caption_text_never_holds_a_marker_nor_a_line_break(a, b):
    got = caption_text(a + " This one shows:" + b)  # a marker starting a word (inside one it is none)
    assert "this one shows:" not in got.lower() and "\n" not in got and got == " ".join(got.split())


def test_a_line_without_a_caption_does_not_end_decoding(corpus, monkeypatch):
    """Scripted generation: a blank line first (the tiny LM's unknown token decodes to nothing), then a caption:
    decoding goes on from the blank line within the token budget; a first line holding a caption is one call."""
    tmp, man, space, lm, recs = corpus
    tok = lm.tokenizer
    nl = tok.convert_tokens_to_ids("\n")
    blank, caption = [tok.unk_token_id, nl], tok("Two red stars .", add_special_tokens=False)["input_ids"] + [nl]
    calls = []

    def scripted(inputs_embeds, attention_mask, max_new_tokens, **kw):
        calls.append((inputs_embeds.shape[1], max_new_tokens))
        row = (blank if len(calls) == 1 else caption) + [lm.eos_id] * 3
        return torch.tensor([row[:max_new_tokens]] * len(inputs_embeds))

    monkeypatch.setattr(lm.model, "generate", scripted)
    leads = lead_embeddings(lm, None, [tok("One blue star .", add_special_tokens=False)["input_ids"]])
    want = " ".join(tok.decode(caption[:-1]).split())
    assert want.startswith("Two red stars")
    assert generate_captions(lm, leads, PROMPT, 10) == [want]
    assert calls == [(leads[0].shape[0], 10), (leads[0].shape[0] + 2, 8)]  # after the blank line's 2 tokens
    calls.clear()
    assert generate_captions(lm, leads, PROMPT, 2) == [""]  # no budget left after the blank line
    assert len(calls) == 1
    calls.clear()
    calls.append(None)  # the script starts at the caption
    assert generate_captions(lm, leads, PROMPT, 10) == [want] and len(calls) == 2
