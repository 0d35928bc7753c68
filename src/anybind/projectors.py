"""Projectors: small trainable maps from a frozen encoder's features into the shared space.

Every projector standardises its input with statistics fitted on the training
features (stored as buffers, saved with the weights), then maps it to the
shared width.  ``kind="linear"`` is one affine map; ``kind="mlp"`` adds a
hidden layer with GELU and dropout on top of a linear skip path, so it can
only add to what a linear map does.  ``kind="identity"`` passes the encoder's
features through untouched: the modality is *locked* and its encoder's own
space becomes the shared space (LiT-style locking, and the frozen side of
progressive binding).

A *temporal* projector (``frames=T > 0``) reads a frame-sequence feature (``video:frames(...)@...,pool=attn``,
:mod:`anybind.encoders.video`): ``T`` rows of ``d`` frame features and a validity flag, flattened
(``in_dim = T * (d + 1)``).  It standardises the frames (statistics over the training clips' valid frames),
pools them with a learnt gated attention (``a_t = softmax_t(v . tanh(W z_t + b))`` over the valid frames,
Ilse et al.'s attention MIL pooling, the usual temporal head over frozen per-frame features) and maps the
pooled ``d`` features like any projector.  ``v`` starts at zero, so an untrained head is the mean over the
valid frames (the pooling ``pool=mean`` gives), and a ridge start (:meth:`Projector.standardized`) is exact.  The
projector as a whole is not the ``pool=mean`` one: its standardisation is fitted over the valid frames (not the
clip means: another scale, so another ridge shrinkage) and input dropout acts on the frames; matching both was
tried on Tux Paint video val and did not change the outcome (BENCHMARKS.md, issue 17).  The
scorer has its own learning rate (``TrainConfig.attn_lr``: at the recipe's fine-tuning rate ``v`` barely leaves
zero, issue 17) and may first be trained alone on top of the frozen ridge start (``TrainConfig.attn_epochs``).

A *centred* projector (``center=True``, see :mod:`anybind.robust`) also stores its modality's
mean unit embedding over the training split and returns ``normalize(y) - center``: once
re-normalised by the caller, every item is measured from its modality's centre.

A projector with a *kernel branch* (``kernel=n > 0``, space format 5, issue 16) adds to its linear map, before any
centring, ``exp((cos(z, S) - 1) / kernel_tau) @ A``: ``z`` its standardised input, ``S`` (``n`` x features, the
buffer ``kernel_support``) unit-normed standardised training inputs, ``A`` (``n`` x ``out_dim``, ``kernel_coef``)
kernel ridge coefficients fitted by the ridge start on the residual of the label-bridge prior
(:mod:`anybind.ridge_kernel`).  Both are buffers: fine-tuning, L2-SP and WiSE-FT leave them as they are; an input
far from every support item gets a kernel term near zero, so it falls back on the linear map.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base_gate import check_gate, faded_share

log = logging.getLogger(__name__)

#: the smallest standardisation scale: features whose spread is below it do not vary over the training items
SCALE_FLOOR = 1e-6
#: features whose spread is below this fraction of their size do not vary either: the float rounding of the mean of
#: features that are all the same leaves a spread of about 1e-7 of their size (bf16 keeps 4e-3 of it)
RELATIVE_FLOOR = 1e-5


def standard_scale(spread: float, n: int, name: str | None = None, size: float = 0.0) -> float:
    """The standardisation scale for training features of spread ``spread`` (over ``n`` items; ``size``: their
    root mean square, per dimension): the spread, at least :data:`SCALE_FLOOR`.  A spread under the floor or under
    :data:`RELATIVE_FLOOR` of their size means the features are (nearly) the same for every training item: the
    encoder tells none of them apart, and dividing by so small a scale magnifies any later difference (another clip,
    a bf16 rounding) a hundred thousand times or more; one warning naming the modality says so."""
    if n > 1 and spread < max(SCALE_FLOOR, RELATIVE_FLOOR * size):
        log.warning("modality %r: its features do not vary over the %d training items (spread %.3g, size %.3g): "
                    "every such item embeds alike and any other lands far off; check its encoder and data",
                    name or "?", n, spread, size)
    return max(float(spread), SCALE_FLOOR)


@dataclass
class ProjectorConfig:
    in_dim: int
    out_dim: int = 256
    kind: str = "mlp"  # "linear" | "mlp"
    hidden: int = 1024
    dropout: float = 0.2
    input_dropout: float = 0.1
    standardize: bool = True
    center: bool = False  # inductive centring (space format 3): a stored mean embedding is subtracted
    frames: int = 0  # > 0: a temporal projector over that many frames (space format 4), see the module docstring
    kernel: int = 0  # > 0: a kernel branch over that many support items (space format 5), see the module docstring
    kernel_tau: float = 0.0  # its kernel's temperature (> 0 with a kernel branch)
    gate: int = 0  # > 0: the base-encoder block's gate over that many support rows (space format 6, anybind.base_gate)
    gate_base: int = 0  # its base block's width (the first features)
    gate_q: float = 0.0  # the own-val quantile below which the base-encoder correction fades
    gate_refs: int = 0  # the own-val reference values stored

    def to_dict(self) -> dict:
        """The config as saved; ``center`` and ``frames`` only when set, so a plain space reads as format 2.  The
        rates as floats, as a load reads them (hashed into the identity: ``dropout=0`` saved as ``0`` and read back
        as ``0.0`` made the loaded space's identity differ from the saved one)."""
        d = asdict(self)
        d["dropout"], d["input_dropout"] = float(self.dropout), float(self.input_dropout)
        if not self.center:
            d.pop("center")
        if not self.frames:
            d.pop("frames")
        if not self.kernel:
            d.pop("kernel"), d.pop("kernel_tau")
        else:
            d["kernel_tau"] = float(self.kernel_tau)
        if not self.gate:
            for k in ("gate", "gate_base", "gate_q", "gate_refs"):
                d.pop(k)
        else:
            d["gate_q"] = float(self.gate_q)
        return d

    @property
    def feat_dim(self) -> int:
        """The width the standardisation and the map see: a frame's features for a temporal projector."""
        return self.in_dim // self.frames - 1 if self.frames else self.in_dim


#: the hidden width of a temporal projector's attention scorer
ATTN_HIDDEN = 64


def check_frames(cfg: ProjectorConfig) -> str | None:
    """Why a temporal config cannot be built (None when it can, or when it is not temporal)."""
    if not cfg.frames:
        return None
    if cfg.frames < 0 or cfg.in_dim % cfg.frames or cfg.in_dim // cfg.frames < 2:
        return f"frames={cfg.frames} needs in_dim = frames * (frame features + 1), got in_dim {cfg.in_dim}"
    if cfg.kind == "identity":
        return "an identity projector cannot pool frames (lock another modality)"
    return None


def check_kernel(cfg: ProjectorConfig) -> str | None:
    """Why a kernel branch cannot be built (None when it can, or when there is none)."""
    if not cfg.kernel:
        return None if not cfg.kernel_tau else f"kernel_tau={cfg.kernel_tau} without a kernel branch (kernel=0)"
    if cfg.kernel < 0 or not cfg.kernel_tau > 0 or not np.isfinite(cfg.kernel_tau):
        return f"a kernel branch needs kernel >= 1 and a finite kernel_tau > 0, got {cfg.kernel} and {cfg.kernel_tau}"
    if cfg.kind == "identity" or cfg.frames:
        return "a kernel branch needs a linear or mlp projector that pools no frames"
    return None


class Projector(nn.Module):
    """Feature standardisation followed by a linear or MLP map (batch-first)."""

    def __init__(self, cfg: ProjectorConfig):
        super().__init__()
        if cfg.kind not in ("linear", "mlp", "identity"):
            raise ValueError(f"projector kind must be 'linear', 'mlp' or 'identity', got {cfg.kind!r}")
        if cfg.kind == "identity" and cfg.in_dim != cfg.out_dim:
            raise ValueError(f"an identity projector needs in_dim == out_dim, got {cfg.in_dim} and {cfg.out_dim}")
        why = check_frames(cfg) or check_kernel(cfg) or check_gate(cfg)
        if why:
            raise ValueError(why)
        self.cfg = cfg
        d = cfg.feat_dim
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.in_drop = nn.Dropout(cfg.input_dropout)
        if cfg.frames:
            self.attn = nn.Linear(d, ATTN_HIDDEN)
            self.attn_v = nn.Linear(ATTN_HIDDEN, 1, bias=False)
            nn.init.zeros_(self.attn_v.weight)  # an untrained head is the mean over the valid frames
        self.linear = nn.Linear(d, cfg.out_dim)
        if cfg.kind == "mlp":
            self.mlp = nn.Sequential(
                nn.Linear(d, cfg.hidden),
                nn.GELU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.hidden, cfg.out_dim),
            )
        else:
            self.mlp = None
        if cfg.center:
            self.register_buffer("center", torch.zeros(cfg.out_dim))
        if cfg.kernel:
            self.register_buffer("kernel_support", torch.zeros(cfg.kernel, d))
            self.register_buffer("kernel_coef", torch.zeros(cfg.kernel, cfg.out_dim))
        if cfg.gate:
            self.register_buffer("gate_support", torch.zeros(cfg.gate, cfg.gate_base))
            self.register_buffer("gate_ref", torch.zeros(cfg.gate_refs))

    @torch.no_grad()
    def fit_stats(self, feats: np.ndarray, name: str | None = None) -> "Projector":
        """Set the standardisation from training features (per-dim mean; one global scale; ``name``: the
        modality, for :func:`standard_scale`'s warning)."""
        if self.cfg.frames:  # every valid frame of the training clips
            f, m = self._frames(torch.as_tensor(feats, dtype=torch.float32))
            feats = f[m].numpy()
        if self.cfg.standardize and len(feats) > 1:
            x = torch.as_tensor(feats, dtype=torch.float32)
            self.mean.copy_(x.mean(0))
            # one scale for all dims keeps the encoder's own relative weighting of dimensions
            std = (x - self.mean).pow(2).sum(1).mean().sqrt() / np.sqrt(x.shape[1])
            size = float(x.pow(2).mean().sqrt())
            self.scale.fill_(standard_scale(float(std), len(x), name, size))
        return self

    @torch.no_grad()
    def set_center(self, center: np.ndarray | torch.Tensor) -> "Projector":
        """Centre this projector's output on ``center`` (the modality's mean unit embedding, ``(out_dim,)``)."""
        c = torch.as_tensor(np.asarray(center, dtype=np.float32)).reshape(-1)
        if c.shape[0] != self.cfg.out_dim or not torch.isfinite(c).all():
            raise ValueError(f"a centre must be {self.cfg.out_dim} finite numbers, got shape {tuple(c.shape)}")
        if not self.cfg.center:
            self.cfg = replace(self.cfg, center=True)
            self.register_buffer("center", torch.zeros(self.cfg.out_dim))
        self.center.copy_(c)
        return self

    @torch.no_grad()
    def set_kernel(self, support: torch.Tensor | np.ndarray | None, coef: torch.Tensor | np.ndarray | None = None,
                   tau: float = 0.0) -> "Projector":
        """Give this projector the kernel branch ``exp((cos(z, support) - 1) / tau) @ coef`` (``support``: standardised
        training inputs, unit-normed here; ``None``: remove the branch)."""
        for k in ("kernel_support", "kernel_coef"):
            self._buffers.pop(k, None)
        if support is None:
            self.cfg = replace(self.cfg, kernel=0, kernel_tau=0.0)
            return self
        S = F.normalize(torch.as_tensor(np.asarray(support, dtype=np.float32)), dim=-1)
        A = torch.as_tensor(np.asarray(coef, dtype=np.float32))
        cfg = replace(self.cfg, kernel=int(S.shape[0]), kernel_tau=float(tau))
        why = check_kernel(cfg)
        if why or S.shape != (cfg.kernel, cfg.feat_dim) or A.shape != (cfg.kernel, cfg.out_dim):
            raise ValueError(why or f"a kernel branch needs support (n, {cfg.feat_dim}) and coefficients "
                             f"(n, {cfg.out_dim}), got {tuple(S.shape)} and {tuple(A.shape)}")
        if not (torch.isfinite(S).all() and torch.isfinite(A).all()):
            raise ValueError("a kernel branch needs finite support and coefficients")
        self.cfg = cfg
        self.register_buffer("kernel_support", S.contiguous())
        self.register_buffer("kernel_coef", A.contiguous())
        return self

    @torch.no_grad()
    def set_gate(self, support: torch.Tensor | None, ref: torch.Tensor | None = None, base: int = 0,
                 q: float = 0.0) -> "Projector":
        """Give this projector the base-encoder block's gate (:mod:`anybind.base_gate`; ``support``: the training rows'
        unit-normed standardised base blocks, ``ref``: own val's sorted nearest cosines; ``None``: remove it)."""
        for k in ("gate_support", "gate_ref"):
            self._buffers.pop(k, None)
        if support is None:
            self.cfg = replace(self.cfg, gate=0, gate_base=0, gate_q=0.0, gate_refs=0)
            return self
        S, r = support.float().contiguous(), ref.float().contiguous()
        cfg = replace(self.cfg, gate=int(S.shape[0]), gate_base=int(base), gate_q=float(q), gate_refs=int(len(r)))
        why = check_gate(cfg)
        if why or S.shape != (cfg.gate, cfg.gate_base) or not (torch.isfinite(S).all() and torch.isfinite(r).all()):
            raise ValueError(why or f"a base gate needs finite support (n, {base}) and references, got {tuple(S.shape)}")
        self.cfg = cfg
        self.register_buffer("gate_support", S)
        self.register_buffer("gate_ref", r)
        return self

    def kernel_term(self, z: torch.Tensor) -> torch.Tensor:
        """The kernel branch's output for standardised inputs ``z`` (what :meth:`uncentred` adds), in float32 even
        under autocast (training at bf16/fp16): its coefficients can be large and cancel (an image with several
        captions is several support rows), which a half-precision product turns into noise."""
        with torch.autocast(z.device.type, enabled=False):
            return kernel_rows(z, self.kernel_support, self.kernel_coef, self.cfg.kernel_tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.uncentred(x)
        if self.cfg.center:  # the caller re-normalises: items are measured from the modality's centre
            y = F.normalize(y, dim=-1) - self.center
        return y

    def _frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame-sequence batch as (B, T, d) frame features and a (B, T) validity mask."""
        s = x.reshape(x.shape[0], self.cfg.frames, self.cfg.feat_dim + 1)
        return s[..., :-1], s[..., -1] > 0.5

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """A temporal projector's (B, T) weights over the frames (zero on padding)."""
        f, m = self._frames(x)
        return self._weights((f - self.mean) / self.scale, m)

    def _weights(self, z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        scores = self.attn_v(torch.tanh(self.attn(z))).squeeze(-1)
        # padded frames get no weight; a clip with no valid frame gets all zero weights (and finite gradients:
        # a softmax over a row of -inf would give NaN in the backward pass)
        w = torch.softmax(scores.masked_fill(~m, torch.finfo(scores.dtype).min), dim=-1) * m.to(scores.dtype)
        return w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)

    def attention_parameters(self) -> list[nn.Parameter]:
        """A temporal projector's attention scorer (``attn``, ``attn_v``): trained at its own rate and, in an
        attention phase, alone (:func:`anybind.attention.attention_phase`); empty for any other projector."""
        return [*self.attn.parameters(), *self.attn_v.parameters()] if self.cfg.frames else []

    def standardized(self, x: torch.Tensor) -> torch.Tensor:
        """What the linear map reads (no dropout): the standardised features, or for a temporal projector its
        standardised valid frames pooled with its attention (their mean while the attention is untrained), so a
        ridge start fitted after an attention phase maps the frames the learnt pool picks."""
        if not self.cfg.frames:
            return (x - self.mean) / self.scale
        f, m = self._frames(x)
        z = (f - self.mean) / self.scale
        if not bool(self.attn_v.weight.any()):  # untrained: exactly the mean over the valid frames
            w = m.to(f.dtype) / m.sum(-1, keepdim=True).clamp(min=1)
        else:
            w = self._weights(z, m)
        return (w.unsqueeze(-1) * z).sum(1)

    def uncentred(self, x: torch.Tensor) -> torch.Tensor:
        """The map before any centring."""
        if self.cfg.kind == "identity":  # a locked modality: the encoder's own space, centred
            return x - self.mean
        if self.cfg.frames:
            f, m = self._frames(x)
            z = self.in_drop((f - self.mean) / self.scale)
            x = (self._weights(z, m).unsqueeze(-1) * z).sum(1)
        else:
            z = (x - self.mean) / self.scale
            x = self.in_drop(z)
        y = self.linear(x)
        if self.cfg.gate:  # the base-encoder correction, faded away from the training inputs
            d = self.cfg.gate_base
            y = y - faded_share(z[:, :d], x[:, :d], self.linear.weight[:, :d], self.gate_support, self.gate_ref,
                                self.cfg.gate_q).to(y.dtype)
        if self.mlp is not None:
            y = y + self.mlp(x)
        if self.cfg.kernel:  # a fixed function of the input: no dropout
            y = y + self.kernel_term(z)
        return y


def attention_parameters(projectors: Mapping[str, Projector]) -> list[nn.Parameter]:
    """Every temporal projector's attention scorer parameters in a ``{modality: Projector}`` map (see
    :meth:`Projector.attention_parameters`): what the attention phase steps alone and the trainers give their
    own rate."""
    return [p for pr in projectors.values() for p in pr.attention_parameters()]


#: the most inputs whose kernel rows (one cosine per support item) are held at once: memory is this many x the
#: support (up to 4,096), whatever the number of inputs (a val split scored whole, a large embed)
KERNEL_ROWS = 1024


def kernel_rows(z: torch.Tensor, support: torch.Tensor, coef: torch.Tensor, tau: float) -> torch.Tensor:
    """``exp((cos(z, support) - 1) / tau) @ coef`` in float32 (``support`` unit-normed), :data:`KERNEL_ROWS` inputs
    at a time; each row is computed as it would be alone.  ``z``: inputs (..., d) of any leading shape (one unbatched
    (d,) input included): the leading axes are the inputs chunked, never the feature axis."""
    S, A = support.float(), coef.float()
    lead, z = z.shape[:-1], F.normalize(z.float(), dim=-1).reshape(-1, z.shape[-1])
    out = [torch.exp((c @ S.T - 1) / tau) @ A for c in torch.split(z, KERNEL_ROWS)]  # no input: one empty chunk
    return (out[0] if len(out) == 1 else torch.cat(out)).reshape(*lead, A.shape[-1])


def project(projector: nn.Module, x: np.ndarray) -> torch.Tensor:
    """``projector(x)`` for a numpy batch, run where the projector is (a GPU while it trains there); the
    result on the CPU."""
    dev = next(iter(projector.buffers()), torch.empty(0)).device
    return projector(torch.from_numpy(x).to(dev)).cpu()


#: the state-dict key that carries a kernel branch's temperature (a 0-d tensor) beside its buffers: a state handed
#: from the driver to Ray's workers goes as safetensors (tensors only), and a projector needs the temperature
#: (config, not a tensor) before it can take the buffers
KERNEL_TAU_KEY = "kernel_tau"
#: likewise a base gate's width and quantile (:mod:`anybind.base_gate`)
GATE_KEY = "gate_base_q"


def start_state(pr: nn.Module) -> dict[str, torch.Tensor]:
    """``pr``'s state dict, detached copies, with :data:`KERNEL_TAU_KEY` where it has a kernel branch."""
    sd = {k: v.detach().clone() for k, v in pr.state_dict().items()}
    if getattr(pr, "cfg", None) is not None and pr.cfg.kernel:
        sd[KERNEL_TAU_KEY] = torch.tensor(float(pr.cfg.kernel_tau), dtype=torch.float64)
    if getattr(pr, "cfg", None) is not None and getattr(pr.cfg, "gate", 0):
        sd[GATE_KEY] = torch.tensor([float(pr.cfg.gate_base), float(pr.cfg.gate_q)], dtype=torch.float64)
    return sd


def load_start_state(pr: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Load a :func:`start_state` into ``pr``: its kernel branch (or none) first, then the tensors."""
    sd = dict(sd)
    tau = sd.pop(KERNEL_TAU_KEY, None)
    if "kernel_support" in sd:
        pr.set_kernel(sd["kernel_support"], sd["kernel_coef"], float(tau))
    elif getattr(pr, "cfg", None) is not None and pr.cfg.kernel:
        pr.set_kernel(None)
    gate = sd.pop(GATE_KEY, None)
    if gate is not None:
        pr.set_gate(sd["gate_support"], sd["gate_ref"], int(gate[0]), float(gate[1]))
    elif getattr(pr, "cfg", None) is not None and getattr(pr.cfg, "gate", 0):
        pr.set_gate(None)
    pr.load_state_dict(sd)
