"""Reading a diffusers unCLIP folder (Karlo's layout) into its modules and scheduler settings.

The layout (``kakaobrain/karlo-v1-alpha``; ``UnCLIPPipeline.save_pretrained`` writes the same)::

    model_index.json        {"_class_name": "UnCLIPPipeline", ...}
    prior/                  PriorTransformer                  (text -> normalised CLIP image embedding, x0)
    text_encoder/           CLIPTextModelWithProjection       tokenizer/  CLIPTokenizer
    text_proj/              UnCLIPTextProjModel               (image + text embeddings -> decoder conditioning)
    decoder/                UNet2DConditionModel              (64 px, ε + learned-range variance)
    super_res_first/        UNet2DModel                       super_res_last/  UNet2DModel   (64 -> 256 px)
    prior_scheduler/ decoder_scheduler/ super_res_scheduler/   UnCLIPScheduler configs

Every module class is fixed by its folder name (what ``model_index.json`` names is not imported), so the
folder cannot make us import arbitrary code. diffusers and transformers are imported only here, on loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from dalle2_pytorch.errors import install_hint
from dalle2_pytorch.karlo.denoisers import SchedulerSettings
from dalle2_pytorch.serialization import load_json

MODEL_INDEX = "model_index.json"
UNCLIP_CLASS = "UnCLIPPipeline"
MODULE_FOLDERS = ("prior", "text_encoder", "text_proj", "decoder", "super_res_first", "super_res_last")
SCHEDULER_FOLDERS = ("prior_scheduler", "decoder_scheduler", "super_res_scheduler")
SCHEDULER_FILE = "scheduler_config.json"
INSTALL_HINT = f"Karlo needs diffusers and transformers: {install_hint('karlo')}"


def import_diffusers() -> Any:
    """The diffusers module, or an ImportError that says how to install it."""
    try:
        import diffusers
        import transformers  # noqa: F401  (the text encoder and tokenizer)
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from error
    return diffusers


def module_classes() -> dict[str, Any]:
    """The class that loads each module folder (UnCLIPTextProjModel is not exported by diffusers >= 0.35)."""
    diffusers = import_diffusers()
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    from transformers import CLIPTextModelWithProjection

    return {"prior": diffusers.PriorTransformer, "text_encoder": CLIPTextModelWithProjection,
            "text_proj": UnCLIPTextProjModel, "decoder": diffusers.UNet2DConditionModel,
            "super_res_first": diffusers.UNet2DModel, "super_res_last": diffusers.UNet2DModel}


@dataclass
class KarloComponents:
    """The modules of a Karlo folder (in eval mode) and the three stages' scheduler settings."""

    modules: dict[str, nn.Module]
    tokenizer: Any
    schedulers: dict[str, SchedulerSettings]


def check_unclip_folder(directory: Path) -> None:
    """Raise a FileNotFoundError naming every missing part of a diffusers unCLIP folder."""
    index = directory / MODEL_INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{directory} has no {MODEL_INDEX}: not a diffusers pipeline folder")
    saved_class = load_json(index).get("_class_name")
    if saved_class != UNCLIP_CLASS:
        raise ValueError(f"{index} names {saved_class!r}; Karlo loading reads {UNCLIP_CLASS!r} folders")
    expected = [f"{name}/config.json" for name in MODULE_FOLDERS] + \
        [f"{name}/{SCHEDULER_FILE}" for name in SCHEDULER_FOLDERS] + ["tokenizer/"]
    missing = [name for name in expected if not (directory / name).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} is a diffusers unCLIP folder with parts missing: {missing} "
                                "(was it downloaded or copied only in part?)")


def load_components(directory: Union[str, Path], dtype: Optional[torch.dtype] = None) -> KarloComponents:
    """Load every module of a Karlo folder on the CPU (in ``dtype`` if given) and read its scheduler configs."""
    directory = Path(directory)
    check_unclip_folder(directory)
    from transformers import CLIPTokenizer

    modules = {}
    for name, cls in module_classes().items():
        module = cls.from_pretrained(directory / name)
        modules[name] = (module if dtype is None else module.to(dtype)).eval().requires_grad_(False)
    schedulers = {name.removesuffix("_scheduler"): SchedulerSettings.from_config(
        load_json(directory / name / SCHEDULER_FILE), source=str(directory / name / SCHEDULER_FILE))
        for name in SCHEDULER_FOLDERS}
    for stage in ("decoder", "super_res"):
        if schedulers[stage].objective != "eps":
            raise ValueError(f"{directory}/{stage}_scheduler: Karlo's {stage} predicts ε (prediction_type "
                             f"'epsilon'), got {schedulers[stage].objective!r}")
    return KarloComponents(modules, CLIPTokenizer.from_pretrained(directory / "tokenizer"), schedulers)
