"""Instruments for checking the CUDA path on a CPU: host-device synchronisations and compiled graphs.

``SyncCounter`` counts, inside its ``with`` block, every tensor operation that on a GPU makes the
host wait for the device: reading a value (``item``, ``bool``, ``int``, ``float``, ``tolist``,
``numpy``), ops whose output size depends on the data (``nonzero``, boolean-mask indexing,
``masked_select``, ``unique``) and copies to the host. On a CPU nothing waits, but the same calls
are made, so the count is the one a GPU would pay.

``CaptureBackend`` is a ``torch.compile`` backend that runs each captured graph eagerly and records
what it captured: the number of graphs (one more than the graph breaks) and which tensors entered
them, so a test can assert that a model's parameters were traced rather than run eagerly.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

_READS = frozenset({"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy"})
_DATA_SIZED = frozenset({"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive"})


def _bool_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, Tensor) and i.dtype == torch.bool for i in items)


class SyncCounter(TorchFunctionMode):
    """Counts host-device synchronisations by kind (``counts``) and in all (``total``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _READS or name in _DATA_SIZED:
            self.counts[name] += 1
        elif name in ("__getitem__", "__setitem__") and len(args) > 1 and _bool_index(args[1]):
            self.counts[f"bool-mask {name}"] += 1
        elif name == "cpu":
            # on a CPU every tensor is on the host already; on a GPU this copy waits for the device
            self.counts["copy to host"] += 1
        return func(*args, **kwargs)

    def pause_during(self, optimizer: torch.optim.Optimizer) -> None:
        """Do not count inside ``optimizer.step()``: a non-fused, non-capturable optimiser keeps its step
        counters on the host (reading them waits for nothing), and a fused one reads them on the device."""
        mode = self

        def pre(*_: Any) -> None:
            mode.counts, mode._held = Counter(), mode.counts

        def post(*_: Any) -> None:
            mode.counts = mode._held

        optimizer.register_step_pre_hook(pre)
        optimizer.register_step_post_hook(post)


class CpuBf16Gaps(TorchFunctionMode):
    """Runs in fp32, and casts back to bf16, the ops that CUDA runs in bf16 but a CPU has no bf16 kernel for.

    Only for emulating the CUDA path on a CPU; the code under test is never changed. The gaps (torch
    2.14): antialiased bilinear resizing (``F.interpolate(..., antialias=True)``).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        x = args[0] if args else None
        if (
            func is torch.nn.functional.interpolate
            and kwargs.get("antialias")
            and isinstance(x, Tensor)
            and x.dtype == torch.bfloat16
            and x.device.type == "cpu"
        ):
            return func(x.float(), *args[1:], **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


class CaptureBackend:
    """A ``torch.compile`` backend that records each graph's size and input tensors, then runs it eagerly."""

    def __init__(self) -> None:
        self.graphs = 0
        self.ops = 0
        self.input_ids: set[int] = set()

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable:
        self.graphs += 1
        self.ops += sum(1 for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module"))
        self.input_ids.update(id(t) for t in example_inputs if isinstance(t, Tensor))
        return gm.forward

    def missing(self, params: Iterable[Tensor]) -> list[Tensor]:
        """The tensors of ``params`` that no captured graph received (run eagerly, or not at all)."""
        return [p for p in params if id(p) not in self.input_ids]


# Tiny options per registered model (and the ATRC search supergraph), for checks that must run in
# seconds: narrow decoders on resnet18, InvPT on four blocks of ViT-Ti.
TINY: dict[str, dict[str, Any]] = {
    "mtl": {"options": {"head_channels": 8}},
    "stl": {"options": {"head_channels": 8}},
    "padnet": {"options": {"head_channels": 4, "widths": [8, 8, 16, 16]}},
    "mtinet": {"options": {"widths": [8, 8, 16, 16]}},
    "padnet3way": {"options": {"decoder_channels": [8, 8, 8, 16, 16], "aspp_channels": 8}},
    "densemtl": {"options": {"decoder_channels": [8, 8, 8, 16, 16], "aspp_channels": 8}},
    "atrc": {"options": {"widths": [8, 8, 16, 16]}, "genotype": "nyud_hrnet18"},
    "atrc-search": {"name": "atrc", "options": {"widths": [8, 8, 16, 16], "search": True}},
    "invpt": {
        "backbone": "vit_tiny_patch16_224",
        "options": {"patch_size": 8, "taps": [1, 2, 3, 4], "decoder_dim": 16, "drop_path_rate": 0.0},
    },
}

# bf16 autocast against fp32 on the same weights and batch: each loss within this relative error (bf16
# keeps 8 bits of mantissa, ≈ 0.4 % per rounding; a few layers of them compound).
BF16_RTOL = 0.1
# Host-device synchronisations allowed in one training step on a step that logs (reading the losses).
MAX_SYNCS_PER_STEP = 1


def tiny_model_config(name: str) -> dict[str, Any]:
    """The ``model`` section of a config for ``name`` in ``TINY`` (a model name, or ``atrc-search``)."""
    spec = TINY[name]
    model: dict[str, Any] = {"name": spec.get("name", name), "backbone": spec.get("backbone", "resnet18")}
    model["options"] = dict(spec["options"])
    if "genotype" in spec:
        model["genotype"] = spec["genotype"]
    return model


def _trained_params(run: Any) -> list[tuple[str, Tensor]]:
    named = [(f"model.{n}", p) for n, p in run.model.named_parameters()]
    if run.branch is not None:
        named += [(f"branch.{n}", p) for n, p in run.branch.named_parameters()]
    return named


def check_cuda_path(
    name: str,
    data_root: str,
    regularizer: bool,
    *,
    size: tuple[int, int] = (32, 48),
    batch_size: int = 2,
    compile_step: bool = True,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One training step and one evaluation batch of a tiny ``name`` (``TINY``) on the CUDA path, on a CPU.

    Builds the run three ways from the same seed: as on a CPU (fp32, contiguous), as on CUDA (channels-last
    model and inputs, bf16 autocast), and as on CUDA with ``compile: true`` (a ``CaptureBackend``). Returns
    what a test or the GPU check asserts: the losses in fp32 and bf16, their dtypes, the parameters left
    without a gradient, the synchronisations of a logging step, the graphs captured and the host's
    parameters that no graph received, and the evaluation outputs' memory format and largest difference
    to fp32. Raises whatever the path raises (that is the finding).
    """
    from mtl3d import config as C
    from mtl3d.engine.fastpath import FastPath
    from mtl3d.engine.inference import infer
    from mtl3d.engine.sampler import StepSampler
    from mtl3d.engine.trainer import Run, loss_values

    over: dict[str, Any] = {
        "data": {"root": data_root, "height": size[0], "width": size[1]},
        "model": tiny_model_config(name),
        "batch_size": batch_size,
        "iters": 8,
        "device": "cpu",
        "regularizer": {"enabled": regularizer},
    }
    for key, value in (overrides or {}).items():
        over[key] = {**over[key], **value} if isinstance(value, dict) and key in over else value
    cfg = C.load(None, over)

    def batch_of(run: Run) -> dict[str, Any]:
        sampler = StepSampler(len(run.train_set), batch_size, cfg.iters, cfg.seed)
        return torch.utils.data.default_collate([run.train_set[i] for i in sampler.batch_at(0)])

    def losses(run: Run, batch: dict[str, Any]) -> dict[str, float]:
        torch.manual_seed(1)  # the same dropout and ray samples in both precisions
        run.model.train()
        if run.branch is not None:
            run.branch.train()
        run.hooks.before_step(0, cfg.iters)
        with torch.no_grad():
            return loss_values(run.losses(batch))

    t0 = time.perf_counter()
    report: dict[str, Any] = {"model": name, "regularizer": regularizer}
    ref = Run(cfg)
    batch = batch_of(ref)
    report["fp32"] = losses(ref, batch)

    emu = Run(cfg, fast=FastPath.cuda_emulation())
    with CpuBf16Gaps():
        report["bf16"] = losses(emu, batch)
    torch.manual_seed(1)
    syncs = SyncCounter()
    for opt in (emu.optimizer, *emu.hooks.optimizers.values()):
        syncs.pause_during(opt)
    with CpuBf16Gaps(), syncs:
        out = emu.step(batch, 0)
        loss_values(out)
    report["syncs"] = dict(syncs.counts)
    report["loss_dtypes"] = sorted({str(v.dtype) for v in out.values()})
    report["no_grad"] = [n for n, p in _trained_params(emu) if p.requires_grad and p.grad is None]
    report["channels_last"] = all(
        p.is_contiguous(memory_format=torch.channels_last) for p in emu.model.parameters() if p.dim() == 4
    )

    # evaluation as the evaluator runs it on CUDA: channels-last, full precision
    emu.model.eval()
    ref.model.eval()
    ref.model.load_state_dict(emu.model.state_dict())
    with torch.no_grad():
        _, got = infer(emu.model, batch, FastPath.cuda_emulation(amp=False))
        _, want = infer(ref.model, batch, ref.fast)
    report["eval_max_abs_diff"] = max(float((got[t] - want[t]).abs().max()) for t in want)
    report["eval_finite"] = all(bool(torch.isfinite(v).all()) for v in got.values())
    report["seconds"] = {"eager": round(time.perf_counter() - t0, 1)}

    if compile_step:
        backend = CaptureBackend()
        cfg.compile = True
        compiled = Run(cfg, fast=FastPath.cuda_emulation(compile_backend=backend))
        torch.manual_seed(1)
        with CpuBf16Gaps():
            loss_values(compiled.step(batch, 0))
        report["graphs"] = backend.graphs
        host = [p for p in compiled.model.parameters() if p.requires_grad]
        report["host_params_not_captured"] = len(backend.missing(host))
        report["host_params"] = len(host)
        torch._dynamo.reset()
        report["seconds"]["compiled"] = round(time.perf_counter() - t0 - report["seconds"]["eager"], 1)
    return report
