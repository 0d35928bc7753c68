"""`anybind report`: one self-contained HTML page (figures embedded), on a small real space."""

import base64
import io
import json
from html.parser import HTMLParser

import pytest
from PIL import Image
from typer.testing import CliRunner

from anybind.cli import app
from anybind.data.manifest import Record
from anybind.diagnostics import embed_split
from anybind.errors import DataError
from anybind.evaluate import retrieval_from_embeddings
from anybind.report import default_label, write_report
from anybind.space import Space


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.refs: list[tuple[str, str, str]] = []
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "srcset", "data", "action", "poster"):
                self.refs.append((tag, k, v or ""))
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def data(serve_small):
    return serve_small


def _parse(page: str) -> _Refs:
    p = _Refs()
    p.feed(page)
    return p


def test_report_is_one_self_contained_file_with_every_figure(data, shared_cache, tmp_path):
    space = Space.load(data["space"])
    out, numbers = write_report(space, data["manifest"], tmp_path / "r.html", split="test", cache=shared_cache)
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    p = _parse(page)
    # nothing is fetched from anywhere: no scripts, stylesheets, frames; images are data: URIs, links are anchors
    assert not {"script", "link", "iframe", "object", "embed"} & set(p.tags)
    assert "@import" not in page and "url(" not in page
    for tag, attr, value in p.refs:
        assert value.startswith("#") or value.startswith("data:image/png;base64,"), (tag, attr, value[:60])
    # recall@K curves, one confusion matrix per non-text modality, the geometry figure, the reliability diagram
    # (the space was calibrated by its fit, on the val split), the training curves
    assert len(p.imgs) == 1 + len(numbers["zeroshot"]) + 1 + 1 + 1 and numbers["zeroshot"]
    for src in p.imgs:
        blob = base64.b64decode(src.split(",", 1)[1])
        assert blob.startswith(b"\x89PNG") and min(Image.open(io.BytesIO(blob)).size) > 100
    for alt in ("recall@K curves", "PCA of the embeddings", "training curves", "confusion matrix, image",
                "reliability diagram"):
        assert f'alt="{alt}' in page
    for section in ("Retrieval", "Zero-shot classification", "the modality gap", "Calibration", "Training", "Lineage"):
        assert section in page
    # the numbers are anybind.evaluate's, on the same split
    want = retrieval_from_embeddings(embed_split(space, data["manifest"], "test", cache=shared_cache), ks=(1, 5, 10))
    for k in ("image->text/R@1", "text->image/R@10", "audio->text/R@5"):
        assert numbers["retrieval"][k] == pytest.approx(want[k])
        assert f"<td>{want[k]:.3f}</td>" in page
    n_test = sum(1 for line in open(data["manifest"]) if json.loads(line)["split"] == "test")
    assert numbers["records"] == n_test and f"({n_test} records)" in page
    assert numbers["label"] == "category" and "epochs recorded" in page
    assert set(numbers["diagnostics"]) >= {"diag/gap/image-text", "diag/separability/audio-image"}
    it = numbers["calibration"]["image|text"]
    assert 0 <= it["ece"] <= 1 and 0 <= it["ece_raw"] <= 1 and f"<td>{it['ece']:.3f}</td>" in page


def test_training_free_space_and_chosen_label_via_the_cli(data, shared_cache, tmp_path):
    proc = Space.fit(
        data["manifest"], modalities=["image", "text"], method="procrustes", cache=shared_cache, progress=False
    )
    proc.save(tmp_path / "proc")
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["report", str(tmp_path / "proc"), str(data["manifest"]), "--out", str(tmp_path / "p.html"), "--split", "all",
         "--label", "top", "--template", "a {}.", "--template", "a drawing of a {}.", "--json", str(tmp_path / "n.json"),
         "--cache", str(shared_cache)],
    )
    assert res.exit_code == 0, res.output
    assert "report written to" in res.output
    page = (tmp_path / "p.html").read_text()
    assert "records no training history" in page and "procrustes" in page
    assert "a drawing of a {}." in page
    numbers = json.loads((tmp_path / "n.json").read_text())
    assert numbers["label"] == "top" and set(numbers["zeroshot"]) == {"image"}
    assert numbers["records"] == 36 and "image->text/R@1" in numbers["retrieval"]
    # a label no record has: a clear error naming it
    with pytest.raises(DataError, match="no test record has label 'colour'"):
        write_report(proc, data["manifest"], tmp_path / "x.html", label="colour", cache=shared_cache)
    assert not (tmp_path / "x.html").exists()


def test_default_label_prefers_common_keys_with_few_values():
    def rec(i, **labels):
        return Record(id=str(i), split="test", values={"text": "x"}, labels=labels)

    recs = [rec(i, top=f"t{i % 3}", category=f"c{i % 7}", uid=f"u{i}", rare="r" if i < 2 else None) for i in range(20)]
    for r in recs:
        r.labels = {k: v for k, v in r.labels.items() if v is not None}
    assert default_label(recs) == "top"  # 3 values; category has 7, uid 20; rare is on 2 records only
    same = [rec(i, top="one", category=f"c{i % 2}") for i in range(10)]
    assert default_label(same) == "category"  # a key with a single value cannot be classified
    assert default_label([rec(i) for i in range(5)]) is None and default_label([]) is None
