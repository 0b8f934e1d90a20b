"""Config-driven training (pydantic configs, one loop for CLIP, prior, decoder and VAE) and the toy demo pipeline.

Imported lazily: ``from dalle2_pytorch.train import TrainingRun, load_train_config, run_demo``."""

from importlib import import_module

_EXPORTS = {
    "TrainingRun": "dalle2_pytorch.train.loop",
    "load_train_config": "dalle2_pytorch.train.configs",
    "config_from_dict": "dalle2_pytorch.train.configs",
    "ClipTrainConfig": "dalle2_pytorch.train.configs",
    "PriorTrainConfig": "dalle2_pytorch.train.configs",
    "DecoderTrainConfig": "dalle2_pytorch.train.configs",
    "VaeTrainConfig": "dalle2_pytorch.train.configs",
    "ConfigError": "dalle2_pytorch.train.config_base",
    "run_demo": "dalle2_pytorch.train.demo",
    "PRESETS": "dalle2_pytorch.train.demo",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dalle2_pytorch.train' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
