"""Config-driven training (pydantic configs, one loop for CLIP, prior, decoder and VAE) and the toy demo pipeline.

Imported lazily: ``from dalle2_pytorch.runs import TrainingRun, load_train_config, run_demo``."""

from importlib import import_module

_EXPORTS = {
    "TrainingRun": "dalle2_pytorch.runs.loop",
    "load_train_config": "dalle2_pytorch.runs.configs",
    "config_from_dict": "dalle2_pytorch.runs.configs",
    "ClipTrainConfig": "dalle2_pytorch.runs.configs",
    "PriorTrainConfig": "dalle2_pytorch.runs.configs",
    "DecoderTrainConfig": "dalle2_pytorch.runs.configs",
    "VaeTrainConfig": "dalle2_pytorch.runs.configs",
    "ConfigError": "dalle2_pytorch.runs.config_base",
    "run_demo": "dalle2_pytorch.runs.demo",
    "PRESETS": "dalle2_pytorch.runs.demo",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dalle2_pytorch.runs' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
