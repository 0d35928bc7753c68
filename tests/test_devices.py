"""Devices and precision (issue 17): one runtime for encoding, training, indexing and serving; batches that
halve on out-of-memory errors.  Everything runs on the CPU: a missing device must be a one-line error, bf16
runs through CPU autocast, and GPU requests of Ray actors are checked on the options built."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from anybind.cache import FeatureCache  # noqa: E402
from anybind.cli import app  # noqa: E402
from anybind.encoders.base import Encoder  # noqa: E402
from anybind.encoders.batching import encode_adaptive, is_oom  # noqa: E402
from anybind.encoders.device import (  # noqa: E402
    DeviceError, Runtime, cache_identity, current_runtime, make_runtime, ray_gpus, resolve_device, use_runtime,
)
from anybind.errors import EncoderError  # noqa: E402

CUDA = torch.cuda.is_available()


# ----------------------------------------------------------------------------- resolution
@pytest.mark.skipif(CUDA, reason="checks the error of a machine without CUDA")
def test_an_unavailable_device_is_one_line_and_auto_is_the_cpu():
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match=r"^cuda(:1)? requested but torch.cuda.is_available\(\) is False$"):
            resolve_device(spec)
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_fp16_on_cpu_is_refused_and_bf16_autocasts():
    with pytest.raises(DeviceError, match="fp16 on cpu is not supported: use --precision bf16"):
        make_runtime("cpu", "fp16")
    with pytest.raises(DeviceError, match="unknown precision"):
        make_runtime("cpu", "fp8")
    with use_runtime("cpu", "bf16") as rt:
        assert current_runtime() == rt == Runtime("cpu", "bf16")
        from anybind.encoders.device import autocast

        with autocast():
            y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
        assert y.dtype == torch.bfloat16
    assert current_runtime().precision == "fp32"  # restored


class _Lin(Encoder):
    """A torch encoder: a fixed linear map, on the runtime's device and precision."""

    modality, dim, input_kind, runs_torch = "vec", 3, "text", True

    def __init__(self):
        self.spec = "test:lin"
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(8, 3, generator=g)

    @property
    def identity(self) -> str:
        return "test:lin|v1"

    def load(self, item):
        return item

    def encode_loaded(self, batch):
        from anybind.encoders.device import autocast

        x = torch.tensor([[float(ord(c) % 7) for c in (s * 8)[:8]] for s in batch])
        with autocast():
            y = x @ self.w
        return y.float().numpy()


def test_the_cache_keeps_bf16_features_apart_from_fp32_ones(tmp_path):
    enc = _Lin()
    fc = FeatureCache(tmp_path)
    items = ["alpha", "beta", "gamma"]
    X32 = fc.encode(enc, items, progress=False)
    assert cache_identity(enc) == enc.identity
    with use_runtime("cpu", "bf16"):
        assert cache_identity(enc) == "test:lin|v1|precision=bf16"
        Xbf = fc.encode(enc, items, progress=False)
        assert fc.last_stats.encoded == 3  # not served from the fp32 entries
    assert not np.array_equal(X32, Xbf) and np.allclose(X32, Xbf, atol=0.1)
    assert fc.encode(enc, items, progress=False).tolist() == X32.tolist() and fc.last_stats.hits == 3
    assert enc.identity == "test:lin|v1"  # the identity itself never holds the device or the precision


def test_ray_actors_ask_for_a_gpu_when_the_device_is_cuda(tmp_path):
    from anybind.scale.encode_ray import encode_actor_options
    from anybind.scale.ray_train import scaling

    enc = _Lin()
    kw = dict(batch_size=4, shard_size=16, num_gpus=0.0, actor_cpus=1.0)
    cpu = encode_actor_options(enc, str(tmp_path), **kw)
    assert cpu["num_gpus"] is None and cpu["fn_constructor_kwargs"]["runtime"]["device"] == "cpu"
    with use_runtime(Runtime("cuda:0", "fp16")):  # as set on a CUDA machine (not resolved here)
        gpu = encode_actor_options(enc, str(tmp_path), **kw)
        assert gpu["num_gpus"] == 1.0 and ray_gpus(0.5) == 0.5
        assert gpu["fn_constructor_kwargs"]["runtime"] == {"device": "cuda:0", "precision": "fp16"}
        assert gpu["fn_constructor_kwargs"]["cache_key"] == "test:lin|v1|precision=fp16"
        assert gpu["fn_constructor_kwargs"]["identity"] == "test:lin|v1"
        conf, backend = scaling(2, 1.0)
        assert conf["use_gpu"] is True and conf["resources_per_worker"]["GPU"] == 1 and backend == "nccl"
    conf, backend = scaling(2, 1.0)
    assert conf["use_gpu"] is False and "GPU" not in conf["resources_per_worker"] and backend == "gloo"


# ----------------------------------------------------------------------------- out of memory
class _Oom(Encoder):
    """Row i is (i-th item, 2 * i-th item); a batch larger than ``limit`` raises the device's OOM error."""

    modality, dim, input_kind = "vec", 2, "text"

    def __init__(self, limit: int, kind: str = "cuda"):
        self.spec, self.limit, self.kind = "test:oom", limit, kind
        self.done: list[float] = []  # every item whose forward succeeded, in order
        self.calls = 0

    @property
    def identity(self) -> str:
        return "test:oom"

    def encode_loaded(self, batch: Sequence[float]) -> np.ndarray:
        self.calls += 1
        if len(batch) > self.limit:
            if self.kind == "cuda":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)")
        self.done += list(batch)
        return np.asarray([[x, 2 * x] for x in batch], np.float32)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 40), bs=st.integers(1, 16), limit=st.integers(1, 16), kind=st.sampled_from(["cuda", "mps"]))
def test_oom_halves_the_batch_and_loses_or_repeats_nothing(n, bs, limit, kind):
    items = [float(i) for i in range(n)]
    enc = _Oom(limit, kind)
    X = np.concatenate([encode_adaptive(enc, items[i : i + bs]) for i in range(0, n, bs)] or [np.zeros((0, 2))])
    ref = np.asarray([[x, 2 * x] for x in items], np.float32).reshape(-1, 2)
    assert np.array_equal(X, ref)  # the un-faulted result, in order
    assert enc.done == items  # each item encoded exactly once


def test_oom_logs_once_per_halving_and_a_single_item_that_does_not_fit_is_one_line(caplog):
    enc = _Oom(limit=3)
    with caplog.at_level("WARNING", logger="anybind.encoders.batching"):
        X = encode_adaptive(enc, [float(i) for i in range(16)])
    assert X[:, 0].tolist() == list(range(16))
    halvings = [r.getMessage() for r in caplog.records]
    assert halvings == ["test:oom: out of memory on a batch of 16: retrying in batches of 8",
                        "test:oom: out of memory on a batch of 8: retrying in batches of 4",
                        "test:oom: out of memory on a batch of 4: retrying in batches of 2"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="anybind.encoders.batching"):
        encode_adaptive(enc, [1.0, 2.0, 3.0, 4.0])  # the size that fitted is remembered: no new halving
    assert not caplog.records
    with pytest.raises(EncoderError, match=r"^test:oom: big.wav does not fit in memory even alone") as e:
        encode_adaptive(_Oom(limit=0), [1.0], names=["big.wav"])
    assert "\n" not in str(e.value)
    assert is_oom(MemoryError()) and is_oom(RuntimeError("DefaultCPUAllocator: not enough memory: you tried"))
    assert not is_oom(RuntimeError("shape mismatch")) and not is_oom(ValueError("out of memory"))


def test_the_feature_cache_encodes_through_oom_halving(tmp_path):
    enc = _Oom(limit=2)
    enc.batch_size = 8
    items = [float(i) for i in range(11)]
    X = FeatureCache(tmp_path).encode(enc, items, progress=False)
    assert X[:, 0].tolist() == items and sorted(enc.done) == items


# ----------------------------------------------------------------------------- training
def test_training_runs_under_bf16_autocast_on_cpu():
    from anybind.loop import fit_loop, make_optimizer, make_temperature

    lin = torch.nn.Linear(4, 4)
    scale = make_temperature(0.1)
    seen = []

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.logit_scale = lin, scale

        def forward(self, x):
            y = self.lin(x)
            seen.append(y.dtype)
            return (y.float() ** 2).mean()

    opt = make_optimizer(list(lin.parameters()), scale, [], lr=1e-2, weight_decay=0.0)
    batches = iter(lambda: torch.ones(8, 4), None)
    res = fit_loop(M(), batches, opt, scale, epochs=2, steps=3, use_val=False, patience=5, score=lambda e: None,
                   keep={"lin": lin}, runtime=Runtime("cpu", "bf16"))
    assert seen and set(seen) == {torch.bfloat16} and len(res.history) == 2
    assert lin.weight.dtype == torch.float32 and lin.weight.device.type == "cpu"


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def small_manifest(tux_dir, tmp_path_factory):
    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()][:24]
    out = tmp_path_factory.mktemp("dev") / "manifest.jsonl"
    with open(out, "w") as f:
        for i, r in enumerate(recs):
            keep = {"id": r["id"], "text": r["text"], "image": str(tux_dir / r["image"]),
                    "split": "val" if i % 6 == 0 else "train"}
            f.write(json.dumps(keep) + "\n")
    return out


def test_cli_fit_on_cpu_in_bf16_end_to_end(small_manifest, tmp_path):
    runner = CliRunner()
    out = tmp_path / "space"
    r = runner.invoke(app, ["fit", str(small_manifest), "--modalities", "image,text", "--out", str(out), "--epochs", "3",
                            "--cache", str(tmp_path / "cache"), "--device", "cpu", "--precision", "bf16"])
    assert r.exit_code == 0, r.output
    folders = [p.joinpath("identity.txt").read_text() for p in (tmp_path / "cache").iterdir()]
    assert folders and all(f.endswith("|precision=bf16") for f in folders)  # bf16 features, kept apart
    assert current_runtime().precision == "fp32"  # the command's runtime ends with it
    r = runner.invoke(app, ["eval", str(out), str(small_manifest), "--split", "val", "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output


@pytest.mark.skipif(CUDA, reason="checks the error of a machine without CUDA")
@pytest.mark.parametrize("cmd", [["fit", "M", "--out", "O"], ["encode", "M", "-e", "text:minilm"],
                                 ["index", "S", "M", "--out", "O"], ["serve", "S", "--index", "I"]])
def test_cli_device_cuda_without_cuda_is_one_line_exit_2(cmd, small_manifest, tmp_path):
    args = [str(small_manifest) if a == "M" else str(tmp_path / a) if a in ("O", "S", "I") else a for a in cmd]
    r = CliRunner().invoke(app, [*args, "--device", "cuda"])
    assert r.exit_code == 2, r.output
    assert r.output.strip() == "error: cuda requested but torch.cuda.is_available() is False"
    r = CliRunner().invoke(app, [*args, "--device", "cpu", "--precision", "fp16"])
    assert r.exit_code == 2 and "fp16 on cpu is not supported" in r.output


# ----------------------------------------------------------------------------- the label bridge's class prompts
def test_the_label_bridges_class_prompts_are_kept_per_precision(tmp_path, monkeypatch):
    """The label bridge embeds 1,000 class prompts once and keeps them beside the feature cache.  Those embedded under
    bf16 must never serve an fp32 run, in this process or a later one: keyed by the identity alone, a bf16 run's file
    served every fp32 run after it (speech-retrieval's image cells moved; bridge vectors off by up to 0.016)."""
    from anybind.encoders.bridge import LabelBridgeEncoder

    def bridge(cache: str) -> LabelBridgeEncoder:  # a new encoder each time (the registry keeps one per spec)
        monkeypatch.setenv("ANYBIND_CACHE", str(tmp_path / cache))
        return LabelBridgeEncoder("image:efficientnet-lite0")

    feats = np.random.default_rng(0).normal(size=(8, 1280)).astype(np.float32) ** 2  # ReLU-like base features
    enc = bridge("c")
    with use_runtime("cpu", "bf16"):
        low = enc.bridge(feats)
    after = enc.bridge(feats)  # fp32 again, the same encoder
    later = bridge("c").bridge(feats)  # fp32, a new encoder: reads what is stored
    clean = bridge("clean").bridge(feats)  # fp32 only, another folder
    assert np.abs(low - clean).max() > 1e-4  # bf16 prompts do move the bridge: the test can tell
    np.testing.assert_array_equal(after, clean)
    np.testing.assert_array_equal(later, clean)
    enc = bridge("c")
    with use_runtime("cpu", "bf16"):
        np.testing.assert_array_equal(enc.bridge(feats), low)  # the bf16 file serves bf16 runs
    assert len(list((tmp_path / "c" / "label-bridge").glob("*.npy"))) == 2


def test_cache_only_lookups_read_the_runtimes_precision_entries(tmp_path):
    """``FeatureCache.cached`` (what an index refresh reads, never encoding) finds bf16 features under bf16 and
    does not hand fp32 ones out for them: the same cache identity as ``encode``."""
    enc = _Lin()
    fc = FeatureCache(tmp_path)
    items = ["alpha", "beta", "gamma"]
    keys = [enc.content_key(i) for i in items]
    with use_runtime("cpu", "bf16"):
        Xbf = fc.encode(enc, items, progress=False)
        got, missing = fc.cached(enc, keys)
    assert missing == [] and got.tolist() == Xbf.tolist()
    got32, missing32 = fc.cached(enc, keys)  # fp32: nothing of its own cached yet
    assert missing32 == [0, 1, 2] and np.isnan(got32).all()
