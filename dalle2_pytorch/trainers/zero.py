"""DeepSpeed ZeRO stages 1 and 2 for the trainers' parts, when the accelerate config asks for DeepSpeed.

Every trained part (the prior's network, each unet of a decoder) gets its own DeepSpeed engine around the part's
module and its AdamW: ZeRO partitions that part's optimiser state (stage 1) and gradients (stage 2) over the
processes, so a decoder step that trains one unet reduces and updates that unet alone.  The weights stay whole on
every process (sampling, the EMA and checkpoints of the weights need no communication); that is what stage 3
would shard, and FSDP (:mod:`.sharding`) does that here.

The trainer keeps what it does for every part: its learning-rate schedule (written into the AdamW's groups before each
step), its EMA, the non-finite-step skip (DeepSpeed skips a step whose gradients are not finite over all
processes; the trainer counts it), precision as ``torch.autocast`` (DeepSpeed's own fp16/bf16 casting is switched
off, so the weights, gradients and their reduction stay fp32, as in a plain run) and gradient accumulation (the
engine runs with ``managed_gradient_accumulation: false``: every ``backward`` accumulates, ``step`` reduces and
updates).  Gradient clipping is the engine's, at the part's ``max_grad_norm``.

Checkpoints stay the single-process format: the optimiser state is gathered into one AdamW state per parameter
(:func:`full_optimizer_state`, a collective) and cut back into this process's partition on load.
accelerate's own ``prepare`` is not used: it takes one model and one optimiser, and a decoder has one per unet.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

# ZeRO settings the trainers pass through to DeepSpeed as they are (performance knobs that do not change the maths)
PASSED_THROUGH = {"stage", "overlap_comm", "contiguous_gradients", "reduce_scatter", "reduce_bucket_size",
                  "allgather_partitions", "allgather_bucket_size", "round_robin_gradients",
                  "use_multi_rank_bucket_allreduce",
                  "elastic_checkpoint", "load_from_fp32_weights", "ignore_unused_parameters"}
# what accelerate writes into every ZeRO section, harmless when off
ACCELERATE_DEFAULTS = {"offload_optimizer": {"device": "none", "nvme_path": None},
                       "offload_param": {"device": "none", "nvme_path": None},
                       "stage3_gather_16bit_weights_on_model_save": False}
ADAM_STATE = ("exp_avg", "exp_avg_sq")


@dataclass(frozen=True)
class ZeroSettings:
    """The DeepSpeed config every part's engine is built from (its per-part ``gradient_clipping`` added later)."""

    stage: int
    config: dict[str, Any]


def zero_settings(accelerator: Accelerator) -> ZeroSettings | None:
    """The ZeRO set-up the accelerate config asks for: :class:`ZeroSettings` under DeepSpeed, None otherwise.

    Settings the trainers cannot honour are one error listing each with the reason, never ignored."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    try:
        import deepspeed  # noqa: F401
    except ImportError as error:
        raise ImportError("the accelerate config asks for DeepSpeed, which is not installed: "
                          "pip install --no-build-isolation 'unclip-pytorch[deepspeed]' (see docs/distributed.md)"
                          ) from error
    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    problems = []
    zero = dict(config.get("zero_optimization") or {})
    stage = zero.get("stage", 0)
    if stage not in (1, 2):
        problems.append(f"zero_optimization.stage={stage}: the trainers run ZeRO stage 1 or 2 "
                        + ("(stage 3 partitions the weights: use FSDP for that)" if stage == 3 else
                           "(stage 0 is plain data parallelism: launch without DeepSpeed)"))
    for key, default in ACCELERATE_DEFAULTS.items():
        value = zero.pop(key, default)
        if key.startswith("offload") and (value or {}).get("device", "none") not in ("none", None):
            problems.append(f"zero_optimization.{key}.device={value['device']!r}: offloading is not supported "
                            "(untested)")
    unknown = sorted(set(zero) - PASSED_THROUGH)
    if unknown:
        problems.append(f"zero_optimization settings {unknown}: not verified with the trainers; the ones passed on "
                        f"are {sorted(PASSED_THROUGH)}")
    for name in ("fp16", "bf16"):
        enabled = (config.get(name) or {}).get("enabled", False)
        if enabled is True and accelerator.mixed_precision != name:
            problems.append(f"{name}.enabled in the DeepSpeed config while accelerate's mixed_precision is "
                            f"{accelerator.mixed_precision!r}: precision is the trainer's autocast, set from "
                            "mixed_precision; set the two alike")
    for section in ("optimizer", "scheduler"):
        if config.get(section):
            problems.append(f"a DeepSpeed '{section}' section: the trainers build each part's AdamW and learning-"
                            "rate schedule themselves; remove it and set lr/warmup in the trainer or run config")
    accumulation = config.get("gradient_accumulation_steps", "auto")
    if accumulation not in ("auto", 1, None):
        problems.append(f"gradient_accumulation_steps={accumulation!r}: set the trainer's gradient accumulation "
                        "instead (run config: trainer.gradient_accumulation); DeepSpeed's must be auto or 1")
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu"):
        if config.get(key, "auto") not in ("auto", None):
            problems.append(f"{key}={config[key]!r}: the batch is the trainer's (run config: data.batch_size, per "
                            "process, and trainer.gradient_accumulation); set DeepSpeed's to auto")
    clipping = config.get("gradient_clipping", "auto")
    if clipping not in ("auto", None):
        problems.append(f"gradient_clipping={clipping!r}: clipping is each part's max_grad_norm (trainer or run "
                        "config); set DeepSpeed's to auto")
    if problems:
        raise NotImplementedError("the accelerate DeepSpeed config asks for what dalle2_pytorch's trainers do not "
                                  "support:\n  - " + "\n  - ".join(problems))
    world = accelerator.num_processes
    engine_config = {
        "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": world,
        "zero_optimization": zero, "managed_gradient_accumulation": False, "zero_allow_untested_optimizer": True,
        # precision is the trainer's autocast: the engine keeps fp32 weights and reduces fp32 gradients
        "fp16": {"enabled": False}, "bf16": {"enabled": False},
        "steps_per_print": 2 ** 62, "wall_clock_breakdown": False,
    }
    return ZeroSettings(stage=int(stage), config=engine_config)


def build_engine(module: nn.Module, optimizer: torch.optim.Optimizer, settings: ZeroSettings,
                 max_grad_norm: float | None) -> Any:
    """A DeepSpeed engine that owns ``module``'s gradients and ``optimizer``'s state (partitioned; a collective:
    every process builds its engines in the same order)."""
    import deepspeed
    from deepspeed.utils import logger

    if optimizer.state:
        raise RuntimeError("build_engine needs an optimiser that has not stepped yet")
    logger.setLevel(logging.WARNING)
    config = {**settings.config, "gradient_clipping": float(max_grad_norm or 0.0)}
    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=config)
    return engine


def _flat_partitions(engine: Any) -> list[torch.Tensor]:
    """The fp32 tensors the AdamW really steps: one partition per parameter group, this process's."""
    return list(engine.optimizer.single_partition_of_fp32_groups)


def _link_optimizer_state(engine: Any) -> None:
    """Point every parameter at its slice of the AdamW state.  DeepSpeed 0.19 links them once, right after the
    first group's first step, before AdamW made the other groups' state: those stay unlinked unless linked again."""
    engine.optimizer._hp_optimizer_states_linked = False
    engine.optimizer._lazy_init_hp_params_optimizer_state()


def full_optimizer_state(engine: Any, params: list[list[nn.Parameter]]) -> dict[str, Any]:
    """The AdamW ``state_dict`` a single process would have, gathered from every process's partition (a collective).

    ``params``: the parameters of each group, in the order the optimiser was built with."""
    from deepspeed.utils import safe_get_full_optimizer_state

    adamw = engine.optimizer.optimizer
    partitions = _flat_partitions(engine)
    _link_optimizer_state(engine)
    state: dict[int, dict[str, torch.Tensor]] = {}
    groups = []
    index = 0
    for group, members, partition in zip(adamw.param_groups, params, partitions):
        step = adamw.state.get(partition, {}).get("step")
        indices = []
        for param in members:
            if step is not None:
                state[index] = {"step": step.detach().clone(),
                                **{k: safe_get_full_optimizer_state(param, k).detach().clone() for k in ADAM_STATE}}
            indices.append(index)
            index += 1
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": indices})
    return {"state": state, "param_groups": groups}


def load_optimizer_state(engine: Any, params: list[list[nn.Parameter]], saved: dict[str, Any]) -> None:
    """Put a single-process AdamW ``state_dict`` (:func:`full_optimizer_state`'s format) into this process's
    partition; the groups' hyper-parameters are left as they are.  No communication."""
    from deepspeed.utils import safe_set_full_optimizer_state

    adamw = engine.optimizer.optimizer
    sizes = [len(members) for members in params]
    saved_sizes = [len(group["params"]) for group in saved["param_groups"]]
    if saved_sizes != sizes:
        raise ValueError(f"the saved optimiser has parameter groups of {saved_sizes} parameters, this one {sizes}")
    if not saved["state"]:  # saved before its first step: no state, as a fresh AdamW (linked at the next step)
        adamw.state.clear()
        engine.optimizer._hp_optimizer_states_linked = False
        return
    for partition in _flat_partitions(engine):
        if partition not in adamw.state:  # AdamW makes its state at the first step; make it now to fill it
            adamw.state[partition] = {"step": torch.zeros((), dtype=torch.float32),
                                      **{k: torch.zeros_like(partition) for k in ADAM_STATE}}
    _link_optimizer_state(engine)
    for members, group, partition in zip(params, saved["param_groups"], _flat_partitions(engine)):
        steps = []
        for param, saved_index in zip(members, group["params"]):
            values = saved["state"].get(saved_index)
            if values is None:  # a parameter that never had a gradient in the saved run: fresh moments
                values = {k: torch.zeros_like(param, dtype=torch.float32) for k in ADAM_STATE}
            else:
                steps.append(float(values["step"]))
            for key in ADAM_STATE:
                safe_set_full_optimizer_state(param, values[key].to(param.device, torch.float32), key)
        adamw.state[partition]["step"].fill_(max(steps, default=0.0))


def load_weights(engine: Any, params: list[nn.Parameter]) -> None:
    """After the module's weights were loaded: copy them into the engine's fp32 master partition, which the next
    step updates (otherwise the step would start from the weights the engine was built with)."""
    from deepspeed.utils import safe_set_full_fp32_param

    for param in params:
        safe_set_full_fp32_param(param, param.detach().float())


def step_applied(engine: Any) -> bool:
    """Run the engine's step (reduce what is left, clip, AdamW) and say whether it was applied: DeepSpeed skips a
    step whose gradients are not finite over all processes."""
    engine.step()
    return bool(engine.was_step_applied())
