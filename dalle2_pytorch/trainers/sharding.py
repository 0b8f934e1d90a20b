"""FSDP for the trainers' parts, when the accelerate config asks for it; Megatron-LM refused (DeepSpeed: :mod:`.zero`).

Every trained part (the prior's network, each unet of a decoder) is sharded on its own with torch's FSDP2
``fully_shard``: one sharded unit per part (plus inner units where the config's auto-wrap policy picks them), so a
decoder step that runs one unet all-gathers and reduce-scatters that unet alone.  The part's optimiser is switched to
the sharded parameters; its EMA copy is sharded the same way, so the average is taken shard by shard with no
communication.  FSDP averages the gradients over processes (reduce-scatter), so the trainer's own averaging is skipped
for sharded parts.  Checkpoints are written as full, unsharded state dicts in the single-process format: every
process gathers (:func:`gather_full`), the main process writes; loading cuts every process's shard out of the full
tensors it read (:func:`shard_like`), with no communication.

accelerate's own ``prepare`` is not used: under FSDP2 it takes one model and one optimiser, and a decoder has one
optimiser per unet.  The accelerate config decides whether to shard and how (:func:`fsdp_settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch
from accelerate import Accelerator
from torch import nn

# accelerate turns its mixed_precision into an FSDP policy of this dtype; the trainers apply that precision as autocast
# (fp32 weights, gradients reduced in fp32) instead of FSDP's casting
ACCELERATE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# methods other than ``forward`` that run a part's weights (sampling calls them): FSDP gathers the weights around them
# as it does around ``forward``; by the part's class name
FORWARD_METHODS = {"Unet": ("forward_with_cond_scale",),
                   "DiffusionPriorNetwork": ("forward_with_cond_scale", "guided")}

# blocks verified as inner sharded units (their weights are used only inside their own forward; the prior's
# TransformerBlock, the unets' attention layers are not such: their parents read their weights directly)
WRAPPABLE_BLOCKS = ("ResnetBlock", "CausalTransformer")


@dataclass(frozen=True)
class FSDPSettings:
    """How the parts are sharded: ``fully_shard``'s ``reshard_after_forward``, and ``wrap_classes``: names of block
    classes (the accelerate config's ``transformer_cls_names_to_wrap``) whose instances inside a part become inner
    sharded units, gathered one block at a time; empty: each part is one unit."""

    reshard_after_forward: bool = True
    wrap_classes: tuple[str, ...] = ()


def fsdp_settings(accelerator: Accelerator, model: nn.Module) -> FSDPSettings | None:
    """The sharding the accelerate config asks for: :class:`FSDPSettings` under FSDP, None for plain runs.

    FSDP settings the trainers cannot honour are errors saying which and why, never ignored; Megatron-LM is refused
    (DeepSpeed is :mod:`.zero`'s)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.MEGATRON_LM:
        raise NotImplementedError(
            "the accelerate config asks for Megatron-LM, which dalle2_pytorch's trainers do not support (it splits "
            "transformer layers of Megatron models; these models are not such); choose FSDP (fsdp_version: 2) or "
            "plain multi-GPU (see docs/distributed.md)")
    if kind != DistributedType.FSDP:
        return None
    plugin = accelerator.state.fsdp_plugin
    problems = []
    if plugin.fsdp_version != 2:
        problems.append(f"fsdp_version={plugin.fsdp_version}: the trainers shard with torch's FSDP2 (fully_shard); "
                        "set fsdp_version: 2")
    if not isinstance(plugin.reshard_after_forward, bool):
        problems.append(f"reshard_after_forward={plugin.reshard_after_forward!r}: expected true or false (FSDP2)")
    offload = plugin.cpu_offload
    if type(offload).__name__ == "CPUOffloadPolicy" or getattr(offload, "offload_params", False):
        problems.append("cpu_offload / offload_params: parameter offloading to the CPU is not supported (untested)")
    if plugin.activation_checkpointing:
        problems.append("activation_checkpointing: not supported through FSDP; use the models' own options "
                        "(e.g. the unets' checkpoint_during_training)")
    policy_dtype = getattr(plugin.mixed_precision_policy, "param_dtype", None)
    if policy_dtype is not None and policy_dtype != ACCELERATE_DTYPES.get(accelerator.mixed_precision):
        problems.append(f"an FSDP mixed-precision policy ({policy_dtype}) other than accelerate's mixed_precision "
                        f"({accelerator.mixed_precision!r}): precision is the trainer's autocast; set it with "
                        "mixed_precision alone")
    if plugin.ignored_modules is not None:
        problems.append("ignored_modules: not supported; every parameter of a trained part is sharded")
    wrap_classes = _wrap_classes(plugin, model, problems)
    if problems:
        raise NotImplementedError("the accelerate FSDP config asks for what dalle2_pytorch's trainers do not "
                                  "support:\n  - " + "\n  - ".join(problems))
    return FSDPSettings(reshard_after_forward=plugin.reshard_after_forward, wrap_classes=wrap_classes)


def _wrap_classes(plugin: Any, model: nn.Module, problems: list[str]) -> tuple[str, ...]:
    """The block classes to shard as inner units (transformer-based auto-wrap), checked against ``model``."""
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy, transformer_auto_wrap_policy

    policy = getattr(plugin.auto_wrap_policy, "func", plugin.auto_wrap_policy)
    if policy is None:
        return ()
    if policy is size_based_auto_wrap_policy:
        problems.append("size_based_wrap: it can pick a layer whose weights its parent block reads directly (the "
                        "unets' attention does), which breaks under FSDP; use transformer_based_wrap with "
                        f"transformer_cls_names_to_wrap among {list(WRAPPABLE_BLOCKS)}, or no_wrap")
        return ()
    if policy is not transformer_auto_wrap_policy:
        problems.append(f"auto_wrap_policy={plugin.auto_wrap_policy!r}: expected transformer_based_wrap or no_wrap")
        return ()
    names = tuple(plugin.transformer_cls_names_to_wrap or ())
    present = {type(m).__name__ for m in model.modules()}
    unverified = sorted(set(names) - set(WRAPPABLE_BLOCKS))
    if unverified:
        problems.append(f"transformer_cls_names_to_wrap names {unverified}: only {list(WRAPPABLE_BLOCKS)} are "
                        "verified as sharded units (a block whose weights its parent reads directly breaks under FSDP)")
    elif not set(names) & present:
        problems.append(f"transformer_based_wrap with transformer_cls_names_to_wrap={list(names)}: none of them is a "
                        f"class of this {type(model).__name__}'s blocks; name ResnetBlock for the unets, "
                        "CausalTransformer for the prior")
    return names


def wrapped_units(part: nn.Module, settings: FSDPSettings) -> list[nn.Module]:
    """The submodules of ``part`` that become sharded units, innermost first, ending with ``part`` itself."""
    inner = [m for m in _children_bottom_up(part) if m is not part and type(m).__name__ in settings.wrap_classes]
    return inner + [part]


def _children_bottom_up(module: nn.Module) -> list[nn.Module]:
    order: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        for child in m.children():
            visit(child)
        order.append(m)

    visit(module)
    return order


def shard_module(module: nn.Module, settings: FSDPSettings, device: torch.device) -> None:
    """``fully_shard`` ``module`` in place (inner units first) over every process, on ``device``'s type."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("FSDP needs the processes' group (launch with `accelerate launch` or torchrun)")
    mesh = _mesh(device.type, dist.get_world_size())
    methods = FORWARD_METHODS.get(type(module).__name__, ())
    for unit in wrapped_units(module, settings):
        fully_shard(unit, mesh=mesh, reshard_after_forward=settings.reshard_after_forward)
    for name in methods:
        register_fsdp_forward_method(module, name)


@lru_cache(maxsize=None)
def _mesh(device_type: str, world_size: int):
    """One device mesh over every process per device type (made once: each mesh may set up process groups)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device_type, (world_size,))


def switch_optimizer_parameters(optimizer: torch.optim.Optimizer, before: dict[int, str], module: nn.Module) -> None:
    """Point a fresh optimiser at ``module``'s sharded parameters; ``before`` maps the ids of the parameters it was
    built with to their names in ``module``."""
    after = dict(module.named_parameters())
    for group in optimizer.param_groups:
        missing = [p for p in group["params"] if id(p) not in before]
        if missing:
            raise ValueError(f"the optimiser holds {len(missing)} parameter(s) outside the sharded module "
                             f"{type(module).__name__}")
        group["params"] = [after[before[id(p)]] for p in group["params"]]


def is_sharded(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def gather_full(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every sharded tensor gathered whole (a collective: every process calls it, in the same order);
    other values as they are."""
    return {k: (v.full_tensor() if isinstance(v, torch.Tensor) and is_sharded(v) else v) for k, v in state.items()}


def shard_like(full: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``full`` with each tensor whose entry in ``reference`` is sharded cut to this process's shard of it (the same
    placements; no communication: every process holds the full tensors)."""
    from torch.distributed.tensor import distribute_tensor

    out = {}
    for key, value in full.items():
        target = reference.get(key)
        if isinstance(target, torch.Tensor) and is_sharded(target) and not is_sharded(value):
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{key}: shape {tuple(value.shape)} in the checkpoint, {tuple(target.shape)} here")
            value = distribute_tensor(value.to(device=target.device, dtype=target.dtype), target.device_mesh,
                                      target.placements, src_data_rank=None)
        out[key] = value
    return out


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser's ``state_dict`` with every sharded state tensor gathered whole (a collective)."""
    state = optimizer.state_dict()
    return {**state, "state": {index: gather_full(values) for index, values in state["state"].items()}}


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After ``load_state_dict`` of full tensors: cut every state tensor shaped like its (sharded) parameter to this
    process's shard."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param in optimizer.state and is_sharded(param):
                values = optimizer.state[param]
                reference = {k: param for k, v in values.items() if isinstance(v, torch.Tensor) and v.ndim > 0}
                values.update(shard_like({k: values[k] for k in reference}, reference))


def shard_part(module: nn.Module, optimizer: torch.optim.Optimizer, ema_model: nn.Module | None,
               settings: FSDPSettings, device: torch.device) -> None:
    """Shard a trained part in place: the module, its EMA copy (the same units, so that the average is taken shard by
    shard) and the optimiser's parameters (switched to the sharded ones; the optimiser must not have stepped yet)."""
    if optimizer.state:
        raise RuntimeError("shard_part needs an optimiser that has not stepped yet")
    names = {id(p): name for name, p in module.named_parameters()}
    shard_module(module, settings, device)
    if ema_model is not None:
        shard_module(ema_model, settings, device)
    switch_optimizer_parameters(optimizer, names, module)
