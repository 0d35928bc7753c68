"""The two sides of a federation (:mod:`anybind.federated`): a :class:`Client` holding private pairs and the
:class:`Server` holding only the public set.

They talk through :class:`Message` only: named numeric arrays and counts, checked by
:func:`check_message` each time one crosses (no strings, no record ids, and from a client only
projector weights, embeddings of the *public* records or scores).  A client's records and features
are attributes of the client and never part of a message; the server is built from the public
feature set and the messages, nothing else, so what it can have read is what was sent.

* FedAvg (McMahan et al. 2017): the client adopts the global weights, trains ``local_epochs`` on
  its pairs and sends its weights and its number of training pairs; the server averages them.
* CreamFL (Yu et al. 2023, :mod:`anybind.federated_cream`): the client keeps its own projectors (or, with
  ``client_init="global"``, starts each round from the global ones); trained on its pairs plus CreamFL's inter- and
  intra-modal regulariser towards the global embeddings of the public pairs (the intra-modal negative: its own
  embedding at the round's start, or with ``intra="moon"`` by its previous round's projectors, which it keeps and
  never sends), it sends its embeddings of the public records.  The server ensembles them (weighted by agreement) and distils the global projectors on the public pairs.

Local training is the shared :func:`anybind.loop.fit_loop` with :class:`~anybind.binders.PairBinder`
(FedAvg) or :class:`CreamBinder`; a client holding one modality trains on its labels instead
(:mod:`anybind.federated_single`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .binders import PairBinder
from .errors import DataError, FederationError
from .federated_cream import CreamBinder, KDBinder, ensemble
from .federated_single import LabelBinder, label_batches, label_codes
from .loop import IndexSampler, LoopResult, fit_loop, make_optimizer, make_temperature
from .projectors import Projector, ProjectorConfig, project

#: what each side may send (kind -> array names allowed: "weights" are ``modality.param`` and ``logit_scale``)
KINDS = {"server": {"global", "train"}, "client": {"val", "weights", "public-embeddings"}}


@dataclass(frozen=True)
class Message:
    """What crosses the boundary: named numeric arrays and counts, nothing else."""

    sender: str  # "server" | "client"
    kind: str
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    counts: Mapping[str, float] = field(default_factory=dict)

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()) + 8 * len(self.counts))

    def summary(self) -> str:
        arr = ", ".join(f"{k}[{'x'.join(map(str, a.shape))}]" for k, a in self.arrays.items())
        cnt = ", ".join(f"{k}={v:g}" for k, v in self.counts.items())
        return f"{self.kind}: {arr or '-'}; {cnt or '-'} ({self.nbytes():,} bytes)"


def check_message(msg: Message, *, shapes: Mapping[str, tuple[int, ...]], n_public: int, dim: int,
                  n_mix: int = 0, weights_too: bool = False) -> None:
    """Refuse (:class:`~anybind.errors.FederationError`) a message carrying anything but what its kind allows:
    weights of the known shapes, ``(n_public + n_mix, dim)`` public embeddings per modality (the public records,
    then ``n_mix`` mixes of two of them; ``weights_too``: and the client's weights beside them, CreamFL with
    ``average``), numeric counts; the server's ``train`` message: the global embeddings
    of the public records and the mixes to embed (``mix.pairs``: two public rows each, ``mix.weights``)."""
    if msg.sender not in KINDS or msg.kind not in KINDS[msg.sender]:
        raise FederationError(f"a {msg.sender} may not send a {msg.kind!r} message")
    for k, v in msg.counts.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise FederationError(f"{msg.kind} message: count {k!r} is a {type(v).__name__}, not a number")
    for k, a in msg.arrays.items():
        if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.number):
            raise FederationError(f"{msg.kind} message: {k!r} is not a numeric array")
        pub = shapes[k] if weights_too and k in shapes else (n_public + n_mix, dim)
        want = {"weights": shapes.get(k), "global": shapes.get(k), "public-embeddings": pub,
                "train": {"mix.pairs": (n_mix, 2), "mix.weights": (n_mix,)}.get(k, (n_public, dim))}.get(msg.kind)
        if k == "mix.pairs" and want == tuple(a.shape) and (a.min(initial=0) < 0 or a.max(initial=0) >= n_public):
            raise FederationError(f"{msg.kind} message: {k!r} names rows outside the public set")
        if want is None or tuple(a.shape) != tuple(want):
            raise FederationError(f"{msg.kind} message: {k!r} has shape {tuple(a.shape)}, allowed {want}")


def weights_message(sender: str, kind: str, projectors: Mapping[str, Projector], logit_scale: torch.Tensor,
                    *, buffers: bool = True, **counts: float) -> Message:
    """Every projector's parameters, its buffers (the standardisation, the server's) unless ``buffers=False``,
    and the logit scale."""
    arrays = {}
    for m, p in projectors.items():
        names = set(p.state_dict()) if buffers else {k for k, _ in p.named_parameters()}
        arrays.update({f"{m}.{k}": v.detach().cpu().numpy().copy() for k, v in p.state_dict().items() if k in names})
    arrays["logit_scale"] = np.asarray(float(logit_scale.detach()), dtype=np.float64).reshape(())
    return Message(sender, kind, arrays, counts)


@torch.no_grad()
def load_weights(msg: Message, projectors: Mapping[str, Projector], logit_scale: torch.Tensor) -> None:
    """Copy a weights message into ``projectors`` (those it has) and ``logit_scale``, in place."""
    for m, p in projectors.items():
        p.load_state_dict({k: torch.from_numpy(msg.arrays[f"{m}.{k}"]) for k in p.state_dict()})
    logit_scale.copy_(torch.tensor(float(msg.arrays["logit_scale"])))


@torch.no_grad()
def embed_public(projectors: Mapping[str, Projector], public: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Unit embeddings of the public records' features, per modality (eval mode)."""
    out = {}
    for m, p in projectors.items():
        was = p.training
        p.eval()
        out[m] = F.normalize(project(p, public[m]), dim=-1).numpy().astype(np.float32)
        p.train(was)
    return out


def mixed(public: Mapping[str, np.ndarray], mix: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The public features followed by the mixes ``w * x[i] + (1 - w) * x[j]`` (``mix``: ``mix.pairs`` (i, j),
    ``mix.weights`` w; the same for every modality, so a mix of two pairs is a pair)."""
    if mix is None or not len(mix["mix.weights"]):
        return dict(public)
    i, j = mix["mix.pairs"][:, 0].astype(np.int64), mix["mix.pairs"][:, 1].astype(np.int64)
    w = mix["mix.weights"].astype(np.float32)[:, None]
    return {m: np.concatenate([x, w * x[i] + (1 - w) * x[j]]).astype(x.dtype) for m, x in public.items()}


@contextmanager
def own_rng(holder) -> Iterator[None]:
    """Run with ``holder``'s own torch random stream (dropout), whatever ran before: the result of a party's
    training does not depend on the order parties train in."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(holder.torch_state)
        yield
        holder.torch_state = torch.get_rng_state()


class Client:
    """One party: its private feature set (never sent), its projectors, optimiser and random streams."""

    def __init__(self, fs, public: Mapping[str, np.ndarray], cfg, loss_fn: nn.Module, seed: int, where: str):
        self._fs, self.cfg, self.loss_fn = fs, cfg, loss_fn
        self._train, self._val = fs.split_idx("train"), fs.split_idx("val")
        self.pairs = [(a, b) for a, b in itertools.combinations(fs.modalities, 2) if len(fs.with_pair(self._train, a, b)) >= 2]
        self.labelled: list[str] = []  # without pairs: the one modality trained on its labels (federated_single)
        if not self.pairs:
            self.labelled = self._labelled(fs, where)
        self.modalities = sorted({m for p in self.pairs for m in p} | set(self.labelled))
        self.n_train = int(max([len(fs.with_pair(self._train, *p)) for p in self.pairs]
                               + [int((fs.rows[m][self._train] >= 0).sum()) for m in self.labelled]))
        self.public = {m: torch.from_numpy(public[m]) for m in self.modalities}
        self.rng = np.random.default_rng(seed)
        self.torch_state = torch.Generator().manual_seed(seed).get_state()
        self.projectors: dict[str, Projector] = {}
        # intra="moon": the client's projectors at the end of its previous round (frozen), its intra-modal term's
        # negative; they stay here: no message is built from them
        self._prev: dict[str, Projector] | None = None
        self.logit_scale = make_temperature(cfg.temperature, cfg.learn_temperature)
        self.opt: torch.optim.Optimizer | None = None
        self.sampler = IndexSampler({}, cfg.batch_size, self.rng)
        for p in self.pairs:
            self.sampler.add(p, fs.with_pair(self._train, *p))
        for m in self.labelled:
            self.sampler.add(m, self._train[fs.rows[m][self._train] >= 0])
        self._feats = {m: torch.from_numpy(fs.feats[m]) for m in self.modalities}

    # -- the protocol ---------------------------------------------------------------------------------------
    def handle(self, msg: Message) -> Message:
        """Answer one server message: ``global`` -> ``val`` (and, the first time, the client's start);
        ``train`` -> ``weights`` (FedAvg) or ``public-embeddings`` (CreamFL)."""
        if msg.kind == "global":
            return self._on_global(msg)
        return self._on_train(msg)

    def _on_global(self, msg: Message) -> Message:
        first = not self.projectors
        glob = self._projectors_like(msg)
        # FedAvg trains from the global model; CreamFL only starts there (client_init="own", the paper's) or, with
        # client_init="global", starts every round from it too
        if first or self.cfg.method == "fedavg" or self.cfg.client_init == "global":
            if first:
                self.projectors = copy.deepcopy(glob)
                self.logit_scale.data.copy_(torch.tensor(float(msg.arrays["logit_scale"])))
                params = [q for m in self.modalities for q in self.projectors[m].parameters()]
                self.opt = make_optimizer(params, self.logit_scale, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
            else:
                load_weights(msg, self.projectors, self.logit_scale)
        return Message("client", "val", {}, {"val": self.score(glob), "n_val": self.n_val})

    def _on_train(self, msg: Message) -> Message:
        glob = {k: v for k, v in msg.arrays.items() if not k.startswith("mix.")}
        self.fit(self.cfg.local_epochs, glob=glob or None)
        if self.cfg.method == "creamfl" and self.cfg.intra == "moon":  # kept for the next round's negative
            self._prev = {m: copy.deepcopy(self.projectors[m]).eval().requires_grad_(False) for m in self.modalities}
        if self.cfg.method == "fedavg":
            return weights_message("client", "weights", {m: self.projectors[m] for m in self.modalities},
                                   self.logit_scale, buffers=False, n=self.n_train)
        mix = {k: v for k, v in msg.arrays.items() if k.startswith("mix.")} or None
        mine = {m: self.projectors[m] for m in self.modalities}
        emb = embed_public(mine, mixed({m: v.numpy() for m, v in self.public.items()}, mix))
        if self.cfg.average:  # the FedAvg step too: the weights beside the embeddings
            emb.update(weights_message("client", "weights", mine, self.logit_scale, buffers=False).arrays)
        return Message("client", "public-embeddings", emb, {"n": self.n_train})

    def _labelled(self, fs, where: str) -> list[str]:
        """A client without pairs: its one modality, which its training records label (``cfg.label``)."""
        held = [m for m in fs.modalities if (fs.rows[m][self._train] >= 0).sum() >= 2]
        self._codes = label_codes(fs.records, self.cfg.label)
        codes = self._codes[self._train[fs.rows[held[0]][self._train] >= 0]] if len(held) == 1 else self._codes[:0]
        if len(set(codes[codes >= 0].tolist())) < 2:
            raise DataError(f"{where}: no two modalities occur together in 2 or more training records, and no one "
                            f"modality's training records carry 2 or more values of label {self.cfg.label!r}: a "
                            "federated client needs pairs, or one modality with labels")
        return held

    # -- local work -----------------------------------------------------------------------------------------
    @property
    def n_val(self) -> int:
        return int(sum(len(self._fs.with_pair(self._val, *p)) for p in self.pairs))

    def score(self, projectors: Mapping[str, Projector]) -> float:
        """The val score of ``projectors`` on this client's val pairs (NaN without any)."""
        from .train import val_score

        if not self.pairs:
            return float("nan")
        return float(val_score(projectors, self._fs, self._val, self.pairs))

    def fit(self, epochs: int, *, glob: Mapping[str, np.ndarray] | None = None, use_val: bool = False,
            patience: int = 0, start: bool = False) -> LoopResult:
        """Train the local projectors ``epochs`` epochs on the private pairs (CreamFL: regularised towards the
        global public embeddings ``glob``); ``use_val``: keep the best epoch on the private val pairs."""
        from .train import featureset_batches

        if self.opt is None:
            raise FederationError("a client trains only after it has received the global model")
        mine = {m: self.projectors[m] for m in self.modalities}
        local: nn.Module
        if self.pairs:
            batches: Iterator = featureset_batches(self._fs, self._feats, self.pairs, self.sampler)
            local = PairBinder(mine, self.logit_scale, self.loss_fn)
        else:
            batches = label_batches(self._fs, self._feats, self.labelled, self._codes, self.sampler)
            local = LabelBinder(mine, self.logit_scale)
        model: nn.Module = local
        if glob is not None:
            # the negative: the client at the end of its previous round (intra="moon"; in the first round, as in
            # MOON, its start), else at this round's start
            old = self._prev if self._prev is not None else {
                m: copy.deepcopy(p).eval().requires_grad_(False) for m, p in mine.items()}
            g = {m: torch.from_numpy(np.asarray(v)) for m, v in glob.items()}
            model = CreamBinder(mine, old, self.logit_scale, self.loss_fn, self.public, g,
                                weight=self.cfg.reg_weight, temperature=self.cfg.reg_temperature, local=local)
            n_pub = len(next(iter(self.public.values())))
            pub = IndexSampler({"public": np.arange(n_pub)}, self.cfg.batch_size, self.rng)
            batches = ((b, pub.next("public")) for b in batches)
        with own_rng(self):
            return fit_loop(model, batches, self.opt, self.logit_scale, epochs=epochs,
                            steps=self.sampler.steps(self.pairs or self.labelled), use_val=use_val, patience=patience,
                            score=lambda e: self.score(mine), keep={"projectors": model.projectors}, start=start,
                            label="client")

    def _projectors_like(self, msg: Message) -> dict[str, Projector]:
        out = {}
        for m in self.modalities:
            p = Projector(projector_config(self.cfg, self._fs.feats[m].shape[1]))
            p.load_state_dict({k: torch.from_numpy(msg.arrays[f"{m}.{k}"]) for k in p.state_dict()})
            out[m] = p.eval()
        return out


def projector_config(cfg, in_dim: int) -> ProjectorConfig:
    return ProjectorConfig(in_dim=in_dim, out_dim=cfg.dim, kind=cfg.projector, hidden=cfg.hidden,
                           dropout=cfg.dropout, input_dropout=cfg.input_dropout)


def public_features(public_fs) -> dict[str, np.ndarray]:
    """The public set both sides use: the features of its training records that have every modality."""
    idx = public_fs.split_idx("train")
    mods = public_fs.modalities
    have = idx[np.all([public_fs.rows[m][idx] >= 0 for m in mods], axis=0)] if len(idx) else idx
    if len(have) < 2:
        raise DataError(f"{', '.join(public_fs.sources)}: the public set needs 2 or more training records with "
                        f"every modality ({', '.join(mods)}), found {len(have)}")
    return {m: public_fs.get(m, have) for m in mods}


class Server:
    """The global projectors, built from the public features; it learns of the clients only from messages."""

    def __init__(self, public: Mapping[str, np.ndarray], cfg, loss_fn: nn.Module, seed: int):
        self.cfg, self.loss_fn = cfg, loss_fn
        self.modalities = sorted(public)
        self.public = dict(public)
        self.public_t = {m: torch.from_numpy(v) for m, v in self.public.items()}
        self.n_public = len(next(iter(self.public.values())))
        self.rng = np.random.default_rng(seed)
        self.torch_state = torch.Generator().manual_seed(seed).get_state()
        with own_rng(self):
            self.projectors = {m: Projector(projector_config(cfg, v.shape[1])).fit_stats(v, m)
                               for m, v in self.public.items()}
        self.logit_scale = make_temperature(cfg.temperature, cfg.learn_temperature)
        params = [q for p in self.projectors.values() for q in p.parameters()]
        self.opt = make_optimizer(params, self.logit_scale, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sampler = IndexSampler({"public": np.arange(self.n_public)}, cfg.batch_size, self.rng)
        self.targets: dict[str, torch.Tensor] | None = None
        self.mix_rng = np.random.default_rng([seed, 1])  # the mixes' own stream: kd_mix=0 draws nothing from it
        self.mix: dict[str, np.ndarray] | None = None
        self.points = dict(self.public)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {**{f"{m}.{k}": tuple(v.shape) for m, p in self.projectors.items() for k, v in p.state_dict().items()},
                "logit_scale": ()}

    def global_message(self) -> Message:
        return weights_message("server", "global", self.projectors, self.logit_scale)

    def train_message(self) -> Message:
        """FedAvg: train (from the global weights just sent); CreamFL: the global embeddings of the public set."""
        if self.cfg.method == "fedavg":
            return Message("server", "train")
        arrays = dict(embed_public(self.projectors, self.public))
        if self.cfg.kd_mix > 0:  # fresh mixes of two public pairs each round: more points to distil on
            pairs = np.stack([self.mix_rng.integers(0, self.n_public, self.cfg.kd_mix) for _ in range(2)], 1)
            self.mix = {"mix.pairs": pairs.astype(np.int64),
                        "mix.weights": self.mix_rng.uniform(0, 1, self.cfg.kd_mix).astype(np.float32)}
            arrays.update(self.mix)
        return Message("server", "train", arrays)

    def aggregate(self, replies: Sequence[Message]) -> None:
        """FedAvg: the training-pair-weighted mean of the clients' weights (``server_public``: then :meth:`distil`,
        which without targets trains on the public pairs alone); CreamFL: the agreement-weighted public embeddings,
        then :meth:`distil`."""
        if self.cfg.method == "fedavg":
            self.average(replies)
            if self.cfg.server_public:  # FedAvg + server training on the public pairs (no targets: InfoNCE only)
                self.distil(self.cfg.server_epochs)
            return
        self.points = mixed(self.public, self.mix)  # the public records, then this round's mixes
        # the agreement is with the global embeddings the clients were sent (before any averaging)
        glob = {m: torch.from_numpy(v) for m, v in embed_public(self.projectors, self.points).items()}
        if self.cfg.average:  # FedAvg's step first: the distillation starts from the clients' average
            self.average(replies)
        local = {m: [torch.from_numpy(r.arrays[m]) for r in replies if m in r.arrays] for m in self.modalities}
        self.targets = ensemble(local, glob, self.cfg.reg_temperature)
        self.distil(self.cfg.server_epochs)

    @torch.no_grad()
    def average(self, replies: Sequence[Message]) -> None:
        """FedAvg's step: the projectors' parameters and the logit scale become the training-pair-weighted mean of
        the clients' (each modality over the clients that sent it; the standardisation buffers are the server's)."""
        n = np.asarray([float(r.counts["n"]) for r in replies])
        w = n / n.sum()
        for m, p in self.projectors.items():
            have = [(wi, r) for wi, r in zip(w, replies) if f"{m}.linear.weight" in r.arrays]
            tot = sum(float(wi) for wi, _ in have)
            for k, v in p.named_parameters():
                if have:
                    v.copy_(sum(float(wi) / tot * torch.from_numpy(r.arrays[f"{m}.{k}"]) for wi, r in have))
        self.logit_scale.copy_(torch.tensor(sum(float(wi) * float(r.arrays["logit_scale"]) for wi, r in zip(w, replies))))

    def distil(self, epochs: int) -> LoopResult:
        """Train the global projectors on the public pairs (plus the distillation term once there are targets, on
        the public records and this round's mixes of them: each epoch sees every mix once)."""
        points = {m: torch.from_numpy(v) for m, v in self.points.items()} if self.targets else self.public_t
        model = KDBinder(self.projectors, self.logit_scale, self.loss_fn, points, self.targets, self.cfg.kd_weight,
                         kd=self.cfg.kd, temperature=self.cfg.kd_temperature, n_real=self.n_public)
        steps = self.sampler.steps()
        n_mix = len(next(iter(points.values()))) - self.n_public
        mixes = IndexSampler({"mix": np.arange(self.n_public, self.n_public + n_mix)}, -(-n_mix // steps),
                             self.mix_rng) if n_mix else None
        batches = (np.concatenate([self.sampler.next("public")] + ([mixes.next("mix")] if mixes else []))
                   for _ in itertools.count())
        with own_rng(self):
            return fit_loop(model, batches, self.opt, self.logit_scale, epochs=epochs,
                            steps=steps, use_val=False, patience=0, score=lambda e: None,
                            keep={"projectors": model.projectors}, label="server")
