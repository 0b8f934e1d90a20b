"""The built-in toy pipeline behind `dalle2 demo`: CLIP -> diffusion prior -> two-unet decoder on coloured shapes.

Every stage trains on the toy set (rendered once into memory), saves itself with ``save_pretrained`` under
``<out>/checkpoints/<stage>`` and is reused by a rerun with the same preset.  Then the pipeline writes images for a
few captions, one captioned grid, and the share of images that the pixel judge reads as their caption.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE, tokenize
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.data import ToyShapesDataset, faithfulness, judge_image
from dalle2_pytorch.decoder import Decoder, Unet
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from dalle2_pytorch.serialization import load_json, save_json
from dalle2_pytorch.train.demo_presets import DemoPreset, get_preset
from dalle2_pytorch.train.image_grid import save_captioned_grid, save_image
from dalle2_pytorch.train.model_trainer import ModelTrainer
from dalle2_pytorch.trainers import DecoderTrainer, DiffusionPriorTrainer

TEXT_LEN = 8  # "a magenta triangle" is 5 tokens with start and end
JUDGED = ("colour", "shape")


@dataclass
class ToyData:
    images: torch.Tensor  # (n, 3, s, s) in [0, 1]
    captions: list[str]  # the distinct captions
    caption_ids: torch.Tensor  # (n,) index into captions
    tokens: torch.Tensor  # (len(captions), TEXT_LEN)


def render_toy_data(preset: DemoPreset) -> ToyData:
    dataset = ToyShapesDataset(num_samples=preset.num_train_images, image_size=preset.image_size, seed=preset.seed)
    images, captions, _ = dataset.render_range()
    distinct = sorted(set(captions))
    lookup = {caption: i for i, caption in enumerate(distinct)}
    return ToyData(images, distinct, torch.tensor([lookup[c] for c in captions]),
                   tokenize(distinct, context_length=TEXT_LEN))


def schedule(steps: int) -> dict[str, int]:
    """The trainers' learning-rate schedule for a stage: linear warm-up over 5 % of the steps, then cosine decay."""
    return {"warmup_steps": max(1, int(steps * 0.05)), "cosine_decay_max_steps": steps}


ADAMW = {"eps": 1e-8, "betas": (0.9, 0.999), "wd": 0.0, "max_grad_norm": 1.0}


def fit(name: str, steps: int, train_step: Callable[[], float], log: Callable[[str, dict], None] | None = None) -> float:
    """Call ``train_step`` (one trainer step, returning the loss) ``steps`` times under a progress bar."""
    smoothed = None
    with tqdm(range(steps), desc=name, unit="step", dynamic_ncols=True, leave=True) as bar:
        for step in bar:
            value = train_step()
            smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
            bar.set_postfix(loss=f"{smoothed:.4f}")
            if log is not None and (step + 1) % 50 == 0:
                log(name, {"step": step + 1, "loss": smoothed})
    return float(smoothed if smoothed is not None else float("nan"))


# ----------------------------------------------------------------------------- stages
def train_clip(preset: DemoPreset, data: ToyData, generator: torch.Generator, log=None) -> CLIP:
    c = preset.clip
    clip = CLIP(dim_text=c.dim, dim_image=c.dim, dim_latent=c.dim_latent, num_text_tokens=VOCAB_SIZE,
                text_enc_depth=c.depth, text_seq_len=TEXT_LEN, text_heads=c.heads, text_dim_head=c.dim_head,
                visual_enc_depth=c.depth, visual_heads=c.heads, visual_dim_head=c.dim_head,
                visual_image_size=preset.image_size, visual_patch_size=c.patch_size, visual_patch_dropout=0.0)
    by_caption = [torch.nonzero(data.caption_ids == i).flatten() for i in range(len(data.captions))]

    trainer = ModelTrainer(clip, lr=c.lr, wd=0.0, max_grad_norm=1.0, **schedule(c.steps))

    def train_step() -> float:
        # every caption once per copy, with a fresh image: no false negatives inside a copy
        picks = [members[torch.randint(len(members), (c.copies_per_caption,), generator=generator)]
                 for members in by_caption]
        order = torch.stack(picks, dim=1).flatten()  # copy-major
        caption_order = torch.arange(len(by_caption)).repeat(c.copies_per_caption)
        loss = trainer(lambda: clip(data.tokens[caption_order], data.images[order], return_loss=True))
        trainer.update()
        return loss

    fit("clip", c.steps, train_step, log)
    return clip.eval()


@torch.no_grad()
def embed_all(adapter: BuiltinClipAdapter, data: ToyData, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    image_embeds = torch.cat([adapter.embed_image(data.images[i:i + batch_size]).image_embed
                              for i in range(0, len(data.images), batch_size)])
    return image_embeds, adapter.embed_text(data.tokens).text_embed


def train_prior(preset: DemoPreset, adapter: BuiltinClipAdapter, data: ToyData, image_embeds: torch.Tensor,
                text_embeds: torch.Tensor, generator: torch.Generator, log=None) -> DiffusionPrior:
    p = preset.prior
    net = DiffusionPriorNetwork(preset.clip.dim_latent, depth=p.depth, dim_head=p.dim_head, heads=p.heads,
                                max_text_len=TEXT_LEN)
    prior = DiffusionPrior(net, clip=adapter, timesteps=p.timesteps, sample_timesteps=p.sample_steps,
                           cond_drop_prob=p.cond_drop_prob, condition_on_text_encodings=False)

    trainer = DiffusionPriorTrainer(prior, use_ema=False, lr=p.lr, **ADAMW, **schedule(p.steps))

    def train_step() -> float:
        index = torch.randint(len(image_embeds), (p.batch_size,), generator=generator)
        loss = trainer(text_embed=text_embeds[data.caption_ids[index]], image_embed=image_embeds[index])
        trainer.update()
        return loss

    fit("prior", p.steps, train_step, log)
    return prior.eval()


def train_decoder(preset: DemoPreset, adapter: BuiltinClipAdapter, data: ToyData, image_embeds: torch.Tensor,
                  generator: torch.Generator, log=None) -> Decoder:
    d = preset.decoder
    latent = preset.clip.dim_latent
    unets = [Unet(dim=dim, image_embed_dim=latent, cond_dim=dim, dim_mults=(1, 2), num_resnet_blocks=1,
                  attn_heads=2, attn_dim_head=16) for dim in d.dims]
    decoder = Decoder(unet=tuple(unets), clip=adapter, image_sizes=(preset.image_size // 2, preset.image_size),
                      timesteps=d.timesteps, predict_v=True, learned_variance=False,
                      image_cond_drop_prob=d.image_cond_drop_prob, text_cond_drop_prob=0.0)
    trainer = DecoderTrainer(decoder, use_ema=False, lr=d.lr, **ADAMW, cosine_decay_max_steps=tuple(d.steps),
                             warmup_steps=tuple(schedule(steps)["warmup_steps"] for steps in d.steps))
    for number, steps in enumerate(d.steps, start=1):
        def train_step(number: int = number) -> float:
            index = torch.randint(len(image_embeds), (d.batch_size,), generator=generator)
            loss = trainer(data.images[index], image_embed=image_embeds[index], unet_number=number)
            trainer.update(number)
            return loss

        fit(f"decoder unet {number}", steps, train_step, log)
    return decoder.eval()


# ----------------------------------------------------------------------------- checkpoints
def _load_or_train(directory: Path, fingerprint: str, cls, train: Callable[[], torch.nn.Module],
                   say: Callable[[str], None]):
    marker = directory / "demo_stage.json"
    if marker.is_file() and load_json(marker).get("fingerprint") == fingerprint:
        say(f"reusing {directory.name} from {directory}")
        return cls.from_pretrained(directory).eval()
    started = time.perf_counter()
    model = train()
    model.save_pretrained(directory)
    save_json({"fingerprint": fingerprint, "seconds": round(time.perf_counter() - started, 1)}, marker)
    return model


@torch.no_grad()
def generate(prior: DiffusionPrior, decoder: Decoder, captions: list[str], preset: DemoPreset,
             generator: torch.Generator) -> torch.Tensor:
    """Text -> images through the public :class:`DALLE2` pipeline, with the preset's sampling settings."""
    p, d = preset.prior, preset.decoder
    pipeline = DALLE2(prior=prior, decoder=decoder, prior_num_samples=2)
    return pipeline(captions, cond_scale=list(d.cond_scale), prior_cond_scale=p.cond_scale, sampler=d.sampler,
                    steps=list(d.sample_steps), prior_sampler="ddim", prior_steps=p.sample_steps,
                    generator=generator)


def run_demo(preset: str | DemoPreset = "small", out: str | Path = "outputs", *, retrain: bool = False,
             threads: int = 1, say: Callable[[str], None] = print,
             log: Callable[[str, dict], None] | None = None) -> dict:
    """Train (or reuse) the three stages, generate, judge; returns the summary also written to ``results.json``.

    ``threads``: torch CPU threads.  One is the default: these models are so small that more threads mostly add
    synchronisation, and on a busy machine spinning threads slow a run down many times over."""
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}: expected a positive int")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_demo(get_preset(preset) if isinstance(preset, str) else preset, Path(out), retrain, say, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run_demo(preset: DemoPreset, out: Path, retrain: bool, say: Callable[[str], None],
              log: Callable[[str, dict], None] | None) -> dict:
    checkpoints = out / "checkpoints"
    started = time.perf_counter()
    torch.manual_seed(preset.seed)
    generator = torch.Generator().manual_seed(preset.seed)
    say(f"dalle2 demo, preset {preset.name!r}: rendering {preset.num_train_images} toy images "
        f"of {preset.image_size}px")
    data = render_toy_data(preset)
    if retrain:
        for stage in ("clip", "prior", "decoder"):
            marker = checkpoints / stage / "demo_stage.json"
            if marker.exists():
                marker.unlink()

    clip = _load_or_train(checkpoints / "clip", preset.stage_fingerprint("clip"), CLIP,
                          lambda: train_clip(preset, data, generator, log), say)
    adapter = BuiltinClipAdapter(clip)
    image_embeds, text_embeds = embed_all(adapter, data)
    prior = _load_or_train(checkpoints / "prior", preset.stage_fingerprint("prior"), DiffusionPrior,
                           lambda: train_prior(preset, adapter, data, image_embeds, text_embeds, generator, log), say)
    decoder = _load_or_train(checkpoints / "decoder", preset.stage_fingerprint("decoder"), Decoder,
                             lambda: train_decoder(preset, adapter, data, image_embeds, generator, log), say)

    p, d = preset.prior, preset.decoder
    save_json({"prior": {"cond_scale": p.cond_scale, "steps": p.sample_steps, "sampler": "ddim"},
               "decoder": {"cond_scale": list(d.cond_scale), "steps": list(d.sample_steps), "sampler": d.sampler}},
              checkpoints / "sampling.json")  # read by `dalle2 sample --checkpoint <out>/checkpoints`
    distinct = list(preset.captions) if preset.captions is not None else \
        ToyShapesDataset(num_samples=1, image_size=preset.image_size).all_captions()
    captions = [c for c in distinct for _ in range(preset.images_per_caption)]
    say(f"generating {len(captions)} images for {len(distinct)} captions")
    images = generate(prior, decoder, captions, preset, torch.Generator().manual_seed(preset.seed + 1))
    image_dir = out / "images"
    for stale in image_dir.glob("*.png"):  # from an earlier run, possibly of another preset
        stale.unlink()
    readings = []
    for i, (image, caption) in enumerate(zip(images, captions)):
        save_image(image, image_dir / f"{i:03d}_{caption.replace(' ', '_')}.png")
        seen = judge_image(image)
        readings.append({"caption": caption, "seen": f"{seen.colour} {seen.shape}",
                         "match": seen.colour in caption.split() and seen.shape in caption.split()})
    score = faithfulness(images, captions, attributes=JUDGED)
    grid_path = save_captioned_grid(images, [f"{c}{'' if r['match'] else ' (x)'}" for c, r in zip(captions, readings)],
                                    out / "grid.png", columns=2 * preset.images_per_caption)
    summary = {"preset": preset.name, "faithfulness": score, "num_images": len(captions),
               "seconds": round(time.perf_counter() - started, 1), "grid": str(grid_path),
               "images": str(image_dir), "judged": list(JUDGED), "readings": readings}
    save_json(summary, out / "results.json")
    say(f"wrote {len(captions)} images to {image_dir} and the grid {grid_path}")
    say(f"faithfulness (colour and shape as read by the pixel judge): {score:.1%} "
        f"in {summary['seconds']:.0f} s")
    return summary
