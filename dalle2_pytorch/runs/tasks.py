"""What differs between model kinds in the training loop: the loss of a batch, validation, samples and metrics."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE, tokenize
from dalle2_pytorch.eval.prior_metrics import PRIOR_GUIDE_METRICS, prior_cosine_metrics
from dalle2_pytorch.trainers.model_trainer import ModelTrainer
from dalle2_pytorch.trainers import DecoderTrainer, DiffusionPriorTrainer


def _tokens(captions: list[str], length: int, device: torch.device) -> torch.Tensor:
    return tokenize(captions, context_length=length, truncate=True).to(device)


def _rows(batch: dict[str, Any]) -> int:
    return len(next(v for v in batch.values() if isinstance(v, (torch.Tensor, list))))


def _text_len(model) -> int:
    clip = getattr(model, "clip", None)
    if clip is not None and hasattr(clip, "max_text_len"):
        return int(clip.max_text_len)
    return int(getattr(model, "text_seq_len", 77))


class Task:
    """One model kind: its trainer, a training step through it, and validation loss, grids and metrics."""

    kind = ""
    trainer_class = ModelTrainer

    def __init__(self, config) -> None:
        self.config = config

    def total_steps(self) -> int | None:
        """A run length this kind sets itself (None: the loop's epochs and max_steps decide)."""
        return None

    def embed_dim(self, model) -> int | None:
        """The width of the CLIP embeddings this kind's model reads from the data (None: it reads none)."""
        return None

    def schedule(self, total_steps: int | None) -> dict[str, Any]:
        """The trainer's lr schedule keywords: warm-up, and cosine decay over the run when the config asks."""
        t = self.config.trainer
        if isinstance(t.warmup_steps, list):
            raise ValueError(f"trainer.warmup_steps={t.warmup_steps}: a list (one per unet) is for decoders only")
        if t.cosine_decay and total_steps is None:
            raise ValueError("trainer.cosine_decay needs a known run length: set trainer.max_steps (this data "
                             "stream has no length)")
        return {"warmup_steps": t.warmup_steps or None, "cosine_decay_max_steps": total_steps if t.cosine_decay else None}

    def make_trainer(self, model, accelerator, total_steps: int | None = None, **extra):
        """The library's trainer for this kind, set from the trainer section (CLIP, VAE: the trainers' shared core)."""
        self.check_model(model)
        t = self.config.trainer
        settings = dict(accelerator=accelerator, mixed_precision=t.mixed_precision, lr=t.lr, wd=t.weight_decay,
                        max_grad_norm=t.max_grad_norm, **self.schedule(total_steps), **extra)
        if self.trainer_class is ModelTrainer:
            separate = ("discr",) if getattr(model, "discr", None) is not None else ()
            return ModelTrainer(model, ema_beta=t.ema_beta, separate=separate, **settings)
        return self.trainer_class(model, use_ema=t.ema_beta is not None, ema_beta=t.ema_beta or 0.9999, eps=1e-8,
                                  betas=(0.9, 0.999), ema_update_after_step=0, ema_update_every=1, **settings)

    def micro_batch_size(self, batch: dict[str, Any]) -> int | None:
        """Rows per micro-batch under ``trainer.gradient_accumulation`` (None: the whole batch at once)."""
        parts = self.config.trainer.gradient_accumulation
        if parts == 1:
            return None
        return -(-_rows(batch) // parts)

    def train_step(self, trainer, batch: dict[str, Any], step: int) -> dict[str, float]:
        """Forward, backward and optimiser step through ``trainer``; returns the metrics to log.  Under gradient
        accumulation each micro-batch's loss is weighted by its share of the rows, so the gradients add up to the
        whole batch's."""
        size = self.micro_batch_size(batch)
        if size is None:
            loss = trainer(lambda: self.loss(trainer.model, batch, step))
        else:
            rows, loss = _rows(batch), 0.0
            for start in range(0, rows, size):
                micro = {k: v[start:start + size] if isinstance(v, (torch.Tensor, list)) else v
                         for k, v in batch.items()}
                share = min(size, rows - start) / rows
                loss += trainer(lambda: self.loss(trainer.model, micro, step) * share)
        trainer.update()
        return {"loss": loss}

    def loss(self, model, batch: dict[str, Any], step: int) -> torch.Tensor:
        raise NotImplementedError

    def samples(self, model, batch: dict[str, Any], generator: torch.Generator):
        """(images, captions) for a grid, or None when this kind makes no images."""
        return None

    def metrics(self, model, batch: dict[str, Any], generator: torch.Generator) -> dict[str, float]:
        return {}

    def evaluated_metrics(self, model) -> set[str]:
        """The names validation reports (``val_loss`` and :meth:`metrics`'): what ``checkpointing.best_metric`` may
        name."""
        return {"val_loss"}

    def check_model(self, model) -> None:
        """What this kind needs of the model and the data together, checked before the first step."""

    def validation_metrics(self, model, batches: list[dict[str, Any]], generator: torch.Generator) -> dict[str, float]:
        """The kind's metrics at a validation step, given every validation batch (default: the first one's)."""
        return self.metrics(model, batches[0], generator)


class ClipTask(Task):
    kind = "clip"

    def evaluated_metrics(self, model) -> set[str]:
        return super().evaluated_metrics(model) | {"retrieval_accuracy"}

    def check_model(self, model) -> None:
        if self.config.trainer.gradient_accumulation > 1:
            raise ValueError(f"trainer.gradient_accumulation={self.config.trainer.gradient_accumulation}: a CLIP's "
                             "contrastive loss compares every pair of the batch, so micro-batches would change what "
                             "it learns; set it to 1 (and lower data.batch_size if memory is short)")
        if model.num_text_tokens < VOCAB_SIZE:
            raise ValueError(f"model.num_text_tokens={model.num_text_tokens}: captions are tokenized with the bundled "
                             f"CLIP tokenizer, whose ids go up to {VOCAB_SIZE - 1}; set model.num_text_tokens to "
                             f"{VOCAB_SIZE}")

    def loss(self, model, batch, step):
        if "captions" not in batch:
            raise ValueError("training a CLIP needs captions: use data with captions (toy, image_folder with "
                             "captions: true, or webdataset shards with .txt)")
        tokens = _tokens(batch["captions"], model.text_seq_len, batch["images"].device)
        return model(tokens, batch["images"], return_loss=True)

    def metrics(self, model, batch, generator):
        """Text->image retrieval accuracy within the batch (duplicated captions count as correct)."""
        tokens = _tokens(batch["captions"], model.text_seq_len, batch["images"].device)
        logits = model(tokens, batch["images"])
        best = logits.argmax(dim=-1).tolist()
        hits = sum(batch["captions"][j] == caption for j, caption in zip(best, batch["captions"]))
        return {"retrieval_accuracy": hits / len(best)}

    def validation_metrics(self, model, batches, generator):
        """Within-batch retrieval (first batch), and retrieval among the *distinct* captions of all validation
        batches, which stays meaningful when captions repeat: ``zero_shot_accuracy`` (each image -> the best of the
        distinct captions) and ``caption_to_image_top1`` (each distinct caption -> the best image: one of its own?)."""
        metrics = self.metrics(model, batches[0], generator)
        images = torch.cat([batch["images"] for batch in batches])
        captions = [caption for batch in batches for caption in batch["captions"]]
        distinct = sorted(set(captions))
        if len(distinct) < 2:
            return metrics
        logits = model(_tokens(distinct, model.text_seq_len, images.device), images)   # (captions, images)
        index = {caption: i for i, caption in enumerate(distinct)}
        truth = torch.tensor([index[c] for c in captions], device=logits.device)
        metrics["zero_shot_accuracy"] = (logits.argmax(dim=0) == truth).float().mean().item()
        own = torch.arange(len(distinct), device=logits.device)
        metrics["caption_to_image_top1"] = (truth[logits.argmax(dim=1)] == own).float().mean().item()
        return metrics


class PriorTask(Task):
    kind = "prior"
    trainer_class = DiffusionPriorTrainer

    def embed_dim(self, model) -> int | None:
        return int(model.image_embed_dim)

    def evaluated_metrics(self, model) -> set[str]:
        return super().evaluated_metrics(model) | {"sample_cosine"} | {f"prior_{name}" for name in PRIOR_GUIDE_METRICS}

    def check_model(self, model) -> None:
        if self.config.data.source != "clip_retrieval" and self.config.model.clip is None:
            raise ValueError(f"the {self.config.data.source} data gives images and captions but the prior has no "
                             "CLIP to embed them: set model.clip, or train on clip_retrieval embeddings")

    def _inputs(self, model, batch):
        if "text_embed" in batch and "image_embed" in batch:
            return {"text_embed": batch["text_embed"], "image_embed": batch["image_embed"]}
        if model.clip is None:
            raise ValueError("the data gives images and captions but the prior has no CLIP to embed them: "
                             "set model.clip, or train on clip_retrieval embeddings")
        return {"text": _tokens(batch["captions"], _text_len(model), batch["images"].device), "image": batch["images"]}

    def train_step(self, trainer, batch, step):
        loss = trainer(**self._inputs(trainer.model, batch), max_batch_size=self.micro_batch_size(batch))
        trainer.update()
        return {"loss": loss}

    def loss(self, model, batch, step):
        return model(**self._inputs(model, batch))

    def metrics(self, model, batch, generator):
        """The prior guide's cosine metrics of sampled image embeddings (``sample_cosine``: with the true ones)."""
        inputs = self._inputs(model, batch)
        if "text" in inputs:
            text = model.clip.embed_text(inputs["text"])
            truth = model.clip.embed_image(inputs["image"]).image_embed
            text_embed = text.text_embed
        else:
            text_embed, truth = inputs["text_embed"], inputs["image_embed"]
        evaluation = self.config.evaluation
        sampled = model.sample(text_embed=text_embed, num_samples_per_batch=1, timesteps=evaluation.sample_steps,
                               sampler=evaluation.sampler, cond_scale=evaluation.cond_scale, generator=generator)
        metrics = {"sample_cosine": F.cosine_similarity(sampled, truth.to(sampled.dtype)).mean().item()}
        if sampled.shape[0] >= 2:  # the unrelated-caption metric pairs rows up
            guide = prior_cosine_metrics(sampled.cpu(), text_embed.cpu(), truth.cpu())
            metrics.update({f"prior_{name}": value for name, value in guide.items()})
        return metrics


class DecoderTask(Task):
    kind = "decoder"
    trainer_class = DecoderTrainer

    def __init__(self, config, unet_numbers: list[int], num_unets: int | None = None) -> None:
        """``unet_numbers``: the unets trained, taking turns in this order; a number repeated trains that unet more
        often (``[1, 1, 2]``: unet 1 two steps of every three)."""
        super().__init__(config)
        self.turns = list(unet_numbers)
        self.unet_numbers = list(dict.fromkeys(unet_numbers))   # each trained unet once
        self.num_unets = num_unets or max(unet_numbers)
        self.unet_steps = config.trainer.unet_steps
        if self.unet_steps is not None and len(self.turns) != len(self.unet_numbers):
            raise ValueError(f"trainer.unet_numbers={self.turns} repeats a unet to weight it, and unet_steps gives "
                             f"each unet its own steps: use one of the two")
        if self.unet_steps is not None and (len(self.unet_steps) != len(unet_numbers) or min(self.unet_steps) < 1):
            raise ValueError(f"trainer.unet_steps={self.unet_steps}: give a positive step count for each unet "
                             f"trained ({unet_numbers})")

    def total_steps(self) -> int | None:
        """With ``unet_steps`` the run is their sum; otherwise the loop decides."""
        return sum(self.unet_steps) if self.unet_steps is not None else None

    def embed_dim(self, model) -> int | None:
        if model.unconditional:
            return None
        return next((unet.image_embed_dim for unet in model.unets if unet.cond_on_image_embeds), None)

    def unet_for_step(self, step: int) -> int:
        if self.unet_steps is None:
            return self.turns[step % len(self.turns)]
        for number, steps in zip(self.unet_numbers, self.unet_steps):
            if step < steps:
                return number
            step -= steps
        return self.unet_numbers[-1]

    def schedule(self, total_steps: int | None) -> dict[str, Any]:
        """Per unet (all unets of the decoder, zero for those not trained) when the unets train one after another."""
        t = self.config.trainer
        warmup = t.warmup_steps
        if isinstance(warmup, list) and len(warmup) != len(self.unet_numbers):
            raise ValueError(f"trainer.warmup_steps={warmup}: give one value per unet trained ({self.unet_numbers})")
        if not isinstance(warmup, list) and self.unet_steps is None and not t.cosine_decay:
            return super().schedule(total_steps)
        warmups = warmup if isinstance(warmup, list) else [warmup] * len(self.unet_numbers)
        # per unet: its own steps (taking turns: its share of the turns)
        own = self.unet_steps or [None if total_steps is None else -(-total_steps * self.turns.count(n) //
                                                                      len(self.turns)) for n in self.unet_numbers]
        if t.cosine_decay and None in own:
            raise ValueError("trainer.cosine_decay needs a known run length: set trainer.max_steps or unet_steps")
        count = self.num_unets
        per_unet_warmup, per_unet_decay = [None] * count, [None] * count
        for number, steps, wait in zip(self.unet_numbers, own, warmups):
            per_unet_warmup[number - 1] = wait or None
            per_unet_decay[number - 1] = steps if t.cosine_decay else None
        return {"warmup_steps": tuple(per_unet_warmup), "cosine_decay_max_steps": tuple(per_unet_decay)}

    def make_trainer(self, model, accelerator, total_steps: int | None = None, **extra):
        return super().make_trainer(model, accelerator, total_steps, only_train_unets=self.unet_numbers, **extra)

    def train_step(self, trainer, batch, step):
        number = self.unet_for_step(step)
        loss = trainer(batch["images"], unet_number=number, max_batch_size=self.micro_batch_size(batch),
                       **self._conditions(trainer.model, batch))
        trainer.update(number)
        return {"loss": loss, f"loss/unet{number}": loss}

    def _conditions(self, model, batch) -> dict[str, Any]:
        if model.unconditional:
            return {}
        conditions = {}
        if "image_embed" in batch:
            conditions["image_embed"] = batch["image_embed"]
        if model.condition_on_text_encodings and "captions" in batch:
            conditions["text"] = _tokens(batch["captions"], _text_len(model), batch["images"].device)
        return conditions

    def loss(self, model, batch, step):
        return model(batch["images"], unet_number=self.unet_for_step(step), **self._conditions(model, batch))

    def samples(self, model, batch, generator):
        evaluation = self.config.evaluation
        n = min(evaluation.num_samples, len(batch["images"]))
        conditions = {}
        if not model.unconditional:
            image_embed = batch.get("image_embed")
            if image_embed is None:
                image_embed = model.clip.embed_image(batch["images"][:n]).image_embed
            conditions["image_embed"] = image_embed[:n]
            if model.condition_on_text_encodings and "captions" in batch:
                conditions["text"] = _tokens(batch["captions"][:n], _text_len(model), batch["images"].device)
        images = model.sample(batch_size=n, cond_scale=evaluation.cond_scale, sampler=evaluation.sampler,
                              steps=evaluation.sample_steps, generator=generator, **conditions)
        captions = batch.get("captions", [f"sample {i}" for i in range(n)])[:n]
        return images, list(captions)

    def evaluated_metrics(self, model) -> set[str]:
        toy = self.config.data.source == "toy" and not model.unconditional
        return super().evaluated_metrics(model) | ({"faithfulness"} if toy else set())

    def metrics(self, model, batch, generator):
        """On the toy set: the share of samples (made from held-out images' embeddings) that the judge accepts."""
        if self.config.data.source != "toy" or model.unconditional:
            return {}
        from dalle2_pytorch.data import faithfulness

        images, captions = self.samples(model, batch, generator)
        return {"faithfulness": faithfulness(images, captions, attributes=("colour", "shape"))}


class VaeTask(Task):
    kind = "vae"

    def loss(self, model, batch, step):
        return model(batch["images"] * 2 - 1, return_loss=True)

    def train_step(self, trainer, batch, step):
        metrics = super().train_step(trainer, batch, step)
        if "discr" in trainer.parts:
            metrics["discr_loss"] = trainer(lambda: trainer.model(batch["images"] * 2 - 1, return_discr_loss=True),
                                            "discr")
            trainer.update("discr")
        return metrics

    def samples(self, model, batch, generator):
        n = min(self.config.evaluation.num_samples, len(batch["images"]))
        recons = model(batch["images"][:n] * 2 - 1).clamp(-1, 1) * 0.5 + 0.5
        images = torch.cat([batch["images"][:n], recons])
        return images, [f"input {i}" for i in range(n)] + [f"reconstruction {i}" for i in range(n)]


def build_task(config, model) -> Task:
    if config.kind == "clip":
        return ClipTask(config)
    if config.kind == "prior":
        return PriorTask(config)
    if config.kind == "decoder":
        numbers = config.trainer.unet_numbers or list(range(1, model.num_unets + 1))
        bad = [n for n in numbers if not 1 <= n <= model.num_unets]
        if bad:
            raise ValueError(f"trainer.unet_numbers={numbers}: this decoder has unets 1..{model.num_unets}")
        return DecoderTask(config, numbers, model.num_unets)
    if config.kind == "vae":
        return VaeTask(config)
    raise ValueError(f"kind={config.kind!r}: choose clip, prior, decoder or vae")
