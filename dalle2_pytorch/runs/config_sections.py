"""Config sections shared by every kind of training run: data, trainer, evaluation, tracker, checkpointing."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from dalle2_pytorch.runs.config_base import StrictModel
from dalle2_pytorch.trainers.compile import COMPILE_MODES, check_compile_mode


class ToyData(StrictModel):
    """The built-in coloured-shapes set (generated, no download)."""

    source: Literal["toy"] = "toy"
    num_samples: int = Field(4096, gt=0)
    image_size: int = Field(32, gt=0)
    seed: int = 0
    with_position: bool = False
    with_size: bool = False
    val_fraction: float = Field(0.05, ge=0, lt=1, description="share of the samples held out for validation")
    batch_size: int = Field(32, gt=0)
    num_workers: int = Field(0, ge=0)
    batches: Literal["shuffled", "per_caption"] = Field(
        "shuffled", description="per_caption: every batch holds each caption batch_size/#captions times, each with "
                                "a fresh random image (CLIP: no false negatives among copies); shuffled: epochs")


class ImageFolderData(StrictModel):
    """A folder of images; with ``captions`` true each needs a caption (same-named .txt, or captions.csv/jsonl)."""

    source: Literal["image_folder"] = "image_folder"
    path: str
    image_size: int = Field(64, gt=0)
    captions: bool = False
    random_flip: bool = False
    val_fraction: float = Field(0.02, ge=0, lt=1)
    seed: int = 0
    batch_size: int = Field(32, gt=0)
    num_workers: int = Field(0, ge=0)
    batches: Literal["shuffled", "per_caption"] = Field(
        "shuffled", description="per_caption (captions: true; for data whose captions repeat): every batch holds "
                                "each caption batch_size/#captions times, each with a random image of it")


class WebdatasetData(StrictModel):
    """img2dataset tar shards, with CLIP image embeddings inside them or in clip-retrieval embedding shards."""

    source: Literal["webdataset"] = "webdataset"
    urls: str = Field(description="brace pattern of shards, e.g. data/{0000..0099}.tar (paths or fsspec URLs)")
    val_urls: Optional[str] = Field(None, description="shards held out for validation")
    embeddings_url: Optional[str] = Field(None, description="folder of img_emb_<shard>.npy; None = key.npy in tars")
    text_embeddings_url: Optional[str] = None
    shard_width: int = Field(4, gt=0)
    image_size: int = Field(64, gt=0)
    shuffle_num: int = Field(1000, ge=0)
    seed: int = 0
    batch_size: int = Field(32, gt=0)
    num_workers: int = Field(4, ge=0)
    resample_shards: bool = Field(
        False, description="draw shards with replacement (webdataset-style resampling) from generators seeded by "
                           "seed, epoch, process and loader worker, each process its own stream, instead of "
                           "splitting the shards among processes: uneven shards never leave a process short; an "
                           "epoch is then epoch_samples samples (needs epoch_samples)")
    epoch_samples: Optional[int] = Field(
        None, gt=0, description="with resample_shards: training samples per epoch, all processes together; each "
                                "process trains epoch_samples // (batch_size x processes) batches per epoch")

    @model_validator(mode="after")
    def _epoch_of_resampled_shards(self) -> "WebdatasetData":
        if self.resample_shards and self.epoch_samples is None:
            raise ValueError("resample_shards=true draws shards without end: set epoch_samples, the training samples "
                             "per epoch (all processes together), e.g. about the number of samples in the shards")
        if self.epoch_samples is not None and not self.resample_shards:
            raise ValueError("epoch_samples applies only with resample_shards=true (otherwise an epoch is one pass "
                             "over the shards)")
        return self


class ClipRetrievalData(StrictModel):
    """clip-retrieval output (img_emb/, text_emb/, metadata/) for prior training."""

    source: Literal["clip_retrieval"] = "clip_retrieval"
    path: str
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.9, "val": 0.05, "test": 0.05})
    seed: int = 0
    batch_size: int = Field(256, gt=0)


DataConfig = Union[ToyData, ImageFolderData, WebdatasetData, ClipRetrievalData]


class TrainerSection(StrictModel):
    """Optimisation."""

    epochs: int = Field(1, gt=0)
    max_steps: Optional[int] = Field(None, gt=0, description="stop after this many steps (before the epochs end)")
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: Union[int, list[int]] = Field(0, description="linear warm-up steps (decoder: one per unet)")
    cosine_decay: bool = Field(False, description="decay the lr to 0 along a cosine over the run's steps "
                                                 "(decoder with unet_steps: over each unet's steps)")
    max_grad_norm: Optional[float] = Field(1.0, gt=0)
    ema_beta: Optional[float] = Field(None, gt=0, lt=1, description="keep an EMA copy (used for samples/eval)")
    mixed_precision: Optional[Literal["no", "fp16", "bf16"]] = Field(
        None, description="None: accelerate's setting (accelerate config / launch --mixed_precision); a value here "
                          "wins over it, with a warning when the two differ")
    gradient_accumulation: int = Field(1, gt=0, description="split each batch into this many micro-batches whose "
                                                           "gradients add up: the update of the whole batch with the "
                                                           "memory of one micro-batch")
    seed: int = 0
    threads: Optional[int] = Field(None, gt=0, description="torch CPU threads for the run (None: leave the "
                                   "process's setting; the dalle2 command sets 1 unless --threads says otherwise)")
    compile: Union[bool, str] = Field(
        False, description="torch.compile the trained modules in place (the unets, the prior's network, the CLIP or "
                           "VAE): false, true, or a mode: " + ", ".join(COMPILE_MODES) + ". The first steps compile "
                           "(minutes on a CPU); checkpoints are the same as without it")
    unet_numbers: Optional[list[int]] = Field(None, description="decoder only: unets to train, taking turns in this "
                                              "order (default all); repeat one to weight it: [1, 1, 2]")
    unet_steps: Optional[list[int]] = Field(
        None, description="decoder only: train the unets one after another, this many steps each (instead of "
                          "taking turns step by step); the run ends after their sum")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, value):
        return check_compile_mode("trainer.compile", value)


class EvaluationSection(StrictModel):
    """What runs besides training, and how often (in steps; 0 = never)."""

    validate_every: int = Field(500, ge=0)
    validation_batches: int = Field(8, gt=0)
    sample_every: int = Field(1000, ge=0)
    num_samples: int = Field(8, gt=0)
    sampler: Optional[str] = Field("ddim", description="ddpm | ddim | dpmpp_2m | euler | heun")
    sample_steps: Optional[Union[int, list[int]]] = Field(32, description="decoder: one value or one per unet")
    cond_scale: Union[float, list[float]] = Field(1.0, description="guidance scale; decoder: one value or one per unet")

    @field_validator("sample_steps", "cond_scale")
    @classmethod
    def _positive(cls, value):
        values = value if isinstance(value, list) else [value]
        if any(v is not None and not v > 0 for v in values) or value == []:
            raise ValueError(f"expected a positive number or a non-empty list of them, got {value!r}")
        return value


class WandbSection(StrictModel):
    project: str
    run_name: Optional[str] = None
    entity: Optional[str] = None
    mode: Literal["online", "offline", "disabled"] = "offline"


class TrackerSection(StrictModel):
    """Where metrics go: the console always; JSONL, TensorBoard and W&B when enabled."""

    log_every: int = Field(10, gt=0)
    console: bool = True
    jsonl: bool = True
    tensorboard: bool = False
    wandb: Optional[WandbSection] = None


class CheckpointSection(StrictModel):
    directory: str = "checkpoints/run"
    save_every: int = Field(1000, gt=0, description="steps between saves of the latest checkpoint")
    best_metric: str = Field("val_loss", description="metric that decides the best checkpoint")
    best_mode: Literal["min", "max"] = "min"
    copy_to: Optional[str] = Field(None, description="also copy each saved checkpoint to this folder")
    hf_repo: Optional[str] = Field(None, description="also upload each saved checkpoint to this HF Hub repo")
