"""Every check a training run makes before its first step, without training: what `dalle2 config validate` runs
and what `dalle2 train` runs first.

The models are built with their parameters on the ``meta`` device (no memory, no initialisation), so constructor
errors surface in a second even for a billion-parameter config, each named by its config path
(``model.unet.1.dim: ...``).  Then: sampler names, sampling step counts against the diffusion timesteps, per-unet
lists against the number of unets, the data's image size against the last unet's, the metric that picks the best
checkpoint against the metrics this kind logs, the trainer's unet settings, and that the data paths exist.

Inputs that another run writes (the CLIP or VAE checkpoint a decoder or prior config names) are *pending* rather
than wrong: ``validate`` notes them, ``train`` refuses to start without them.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from dalle2_pytorch.runs.config_base import ConfigError
from dalle2_pytorch.runs.config_models import ClipSource, ModelSection, VaeModelConfig


@dataclass
class Findings:
    """What :func:`preflight` found: ``errors`` (the run would fail) and ``pending`` (inputs not written yet)."""

    errors: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def raise_if_any(self, source: str, *, pending_are_errors: bool) -> None:
        """A ConfigError listing every problem (and, when ``pending_are_errors``, every missing input)."""
        problems = self.errors + (self.pending if pending_are_errors else [])
        if problems:
            plural = "s" if len(problems) > 1 else ""
            raise ConfigError(f"{source}: {len(problems)} problem{plural}: " + "; ".join(problems))


_LEADING_NAME = re.compile(r"^\W*(\w+)\W")


def at_path(error: BaseException, path: str, section: Optional[type] = None) -> str:
    """``error``'s message prefixed by the config path of the field it is about (``model.unet.1.dim: ...``)."""
    message = " ".join(str(error).split())
    match = _LEADING_NAME.match(message)
    if match and section is not None and match.group(1) in getattr(section, "model_fields", {}):
        return f"{path}.{match.group(1)}: {message}"
    return f"{path}: {message}"


@contextmanager
def _collect(findings: Findings, path: str, section: Optional[type] = None) -> Iterator[None]:
    try:
        yield
    except (ValueError, TypeError, ImportError, OSError) as error:
        findings.errors.append(at_path(error, path, section))


@contextmanager
def _collect_pending(findings: Findings, path: str) -> Iterator[None]:
    try:
        yield
    except (ValueError, TypeError) as error:
        findings.pending.append(f"{path}: not checked as a whole without its CLIP ({' '.join(str(error).split())})")


def _empty_model(section: ModelSection, keywords: dict[str, Any]):
    """``section.target(**keywords)`` built on the meta device: shapes only, nothing allocated or initialised."""
    with torch.device("meta"):
        return section.target(**keywords)


def _clip_on_meta(source: Optional[ClipSource], findings: Findings):
    """The CLIP a section names, built empty from its saved config (builtin), else None (checked for import)."""
    if source is None:
        return None
    if source.kind != "builtin":
        from dalle2_pytorch.clip.pretrained import import_optional

        extra = {"openai": "openai-clip", "open_clip": "open-clip", "hf": "hf"}[source.kind]
        try:  # every pretrained CLIP loads through transformers
            import_optional("transformers", f"model.clip.kind={source.kind!r}", extra, "transformers")
        except ImportError as error:
            findings.pending.append(at_path(error, "model.clip"))
        return None
    if not source.path:
        findings.errors.append("model.clip.path: required with kind='builtin' (a folder from `dalle2 train clip`)")
        return None
    clip = _saved_on_meta(source.path, "model.clip.path", "CLIP", "`dalle2 train clip`", findings)
    if clip is None:
        return None
    from dalle2_pytorch.clip.adapters import BuiltinClipAdapter

    return BuiltinClipAdapter(clip)


def _saved_on_meta(folder: str, path: str, what: str, how: str, findings: Findings):
    """The model saved (save_pretrained) in ``folder``, built empty from its config.json; None when not there yet."""
    if not (Path(folder) / "config.json").is_file():
        findings.pending.append(f"{path}: {folder!r} holds no saved {what} yet (config.json missing): train it first "
                                f"({how}) or point to its folder")
        return None
    from dalle2_pytorch.serialization import load_json, resolve_class

    with _collect(findings, path):
        meta = load_json(Path(folder) / "config.json")
        with torch.device("meta"):
            return resolve_class(meta["class"]).from_config(meta["config"])
    return None


def build_empty_model(config, findings: Findings):
    """The run's model with its parameters on the meta device, or None when a part cannot be built."""
    model_section, kind = config.model, config.kind
    if kind in ("clip", "vae"):
        with _collect(findings, "model", type(model_section)):
            return _empty_model(model_section, model_section.keywords())
        return None
    clip = _clip_on_meta(model_section.clip, findings)
    # a CLIP named but not available here (not trained yet, or a pretrained one built only on use): the model is
    # built without it, and what fails for want of it is left for `train` to check
    without_clip = model_section.clip is not None and clip is None
    whole = _collect_pending(findings, "model") if without_clip else _collect(findings, "model", type(model_section))
    if kind == "prior":
        net = None
        with _collect(findings, "model.net", type(model_section.net)):
            net = _empty_model(model_section.net, model_section.net.keywords())
        if net is None:
            return None
        with whole:
            return _empty_model(model_section, {**model_section.keywords(exclude=("net", "clip")), "net": net,
                                                "clip": clip})
        return None
    unets = []
    for index, unet in enumerate(model_section.unet):
        with _collect(findings, f"model.unet.{index}", type(unet)):
            unets.append(_empty_model(unet, unet.keywords()))
    vaes, complete = [], len(unets) == len(model_section.unet)
    for index, entry in enumerate(model_section.vae):
        vae = None
        if isinstance(entry, VaeModelConfig):
            with _collect(findings, f"model.vae.{index}", VaeModelConfig):
                vae = _empty_model(entry, entry.keywords())
            complete = complete and vae is not None
        elif isinstance(entry, str):
            vae = _saved_on_meta(entry, f"model.vae.{index}", "VQGanVAE", "`dalle2 train vae`", findings)
            complete = complete and vae is not None
        vaes.append(vae)
    if not complete:
        return None
    keywords = model_section.keywords(exclude=("unet", "vae", "clip"))
    with whole, torch.device("meta"):
        return model_section.target(**keywords, unet=tuple(unets), clip=clip, vae=tuple(vaes))
    return None
# ----------------------------------------------------------------------------- the checks after the build
def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_evaluation(config, model, findings: Findings) -> None:
    """Sampler name, sampling steps against timesteps, per-unet lists against the unet count."""
    from dalle2_pytorch.diffusion.samplers import resolve_sampler

    evaluation = config.evaluation
    if evaluation.sampler is not None:
        with _collect(findings, "evaluation.sampler"):
            resolve_sampler(evaluation.sampler)
    if config.kind not in ("prior", "decoder") or model is None:
        return
    if config.kind == "prior":
        timesteps = [int(model.noise_schedule.num_timesteps)]
    else:
        timesteps = [int(schedule.num_timesteps) for schedule in model.schedules]
    for name in ("sample_steps", "cond_scale"):
        value = getattr(evaluation, name)
        if isinstance(value, list) and len(value) != len(timesteps):
            what = "unet" if config.kind == "decoder" else "prior (give one number)"
            findings.errors.append(f"evaluation.{name}: {len(value)} values but the model has {len(timesteps)} "
                                   f"{what}{'s' if config.kind == 'decoder' and len(timesteps) > 1 else ''}")
            return
    steps = evaluation.sample_steps
    if steps is None:
        return
    for index, (count, limit) in enumerate(zip(_as_list(steps) * (len(timesteps) if not isinstance(steps, list)
                                                                   else 1), timesteps)):
        if count > limit:
            where = f" (unet {index + 1})" if config.kind == "decoder" else ""
            findings.errors.append(f"evaluation.sample_steps: {count} steps{where} but the model diffuses over "
                                   f"{limit} timesteps; use at most {limit}")


def _check_data(config, model, findings: Findings) -> None:
    """The data paths exist; a decoder's images are at least as large as its last unet's."""
    data = config.data
    path = getattr(data, "path", None)
    if path is not None and not Path(path).exists():
        findings.errors.append(f"data.path: {path!r} does not exist")
    elif data.source == "image_folder" and not Path(path).is_dir():
        findings.errors.append(f"data.path: {path!r} is not a folder of images")
    elif data.source == "clip_retrieval" and not Path(path).is_dir():
        findings.errors.append(f"data.path: {path!r} is not a clip-retrieval output folder (img_emb/, text_emb/)")
    if data.source == "webdataset":
        from dalle2_pytorch.data.shards import expand_urls

        for name in ("urls", "val_urls"):
            pattern = getattr(data, name)
            if pattern is None or "://" in pattern:
                continue
            with _collect(findings, f"data.{name}"):
                missing = [url for url in expand_urls(pattern) if not Path(url).exists()]
                if missing:
                    findings.errors.append(f"data.{name}: {len(missing)} shards do not exist, e.g. {missing[0]!r}")
        for name in ("embeddings_url", "text_embeddings_url"):
            folder = getattr(data, name)
            if folder is not None and "://" not in folder and not Path(folder).is_dir():
                findings.errors.append(f"data.{name}: {folder!r} is not a folder")
    if config.kind == "decoder" and model is not None and hasattr(data, "image_size"):
        last = int(model.image_sizes[-1])
        if data.image_size < last:
            findings.errors.append(f"data.image_size: {data.image_size} is smaller than the last unet's image size "
                                   f"{last} (model.image_sizes); set data.image_size to at least {last}")


def _check_task(config, model, findings: Findings) -> None:
    """The trainer's unet settings and the metric that picks the best checkpoint."""
    from dalle2_pytorch.runs.tasks import build_task

    task = None
    with _collect(findings, "trainer"):
        task = build_task(config, model)
    if task is None:
        return
    with _collect(findings, "trainer"):
        task.schedule(config.trainer.max_steps or 1)
    with _collect(findings, "model"):
        task.check_model(model)
    metric, logged = config.checkpointing.best_metric, task.evaluated_metrics(model)
    if metric not in logged:
        import difflib

        close = difflib.get_close_matches(metric, sorted(logged), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        findings.errors.append(f"checkpointing.best_metric: {metric!r} is not a metric a {config.kind} run "
                               f"evaluates, so no best/ checkpoint would ever be written; {hint}choose one of "
                               f"{sorted(logged)}")


def preflight(config) -> Findings:
    """Every problem a training run of ``config`` would meet before or at its first step (see the module doc)."""
    findings = Findings()
    model = build_empty_model(config, findings)
    _check_evaluation(config, model, findings)
    _check_data(config, model, findings)
    if model is not None:
        _check_task(config, model, findings)
    return findings
