"""CPU-sized training configs for `dalle2 train pipeline`, chosen from a preset, the image size and the data set.

Each function returns the plain dict of one stage's training config (the same JSON a user could pass to
``dalle2 train <kind> --config``); the pipeline writes them to ``<out>/configs/`` so a run can be repeated or tuned
by hand.  ``tiny`` is a smoke test (seconds); ``small`` is the toy demo's recipe (CLIP 300 steps, prior 600,
decoder 800 + 300), which learns the 18-caption toy folder to ~99 % faithfulness in about five minutes on 2 cores.
"""

from __future__ import annotations

from typing import Any

IMAGE_SIZES = (32, 64)
PRESETS = {
    "tiny": {"clip_dim": 32, "clip_depth": 1, "clip_latent": 16, "clip_steps": 8, "prior_dim": 16, "prior_depth": 1,
             "prior_steps": 8, "unet_dims": (8, 8), "unet_steps": (6, 6), "timesteps": 50,
             "sample_steps": (4, 4), "prior_sample_steps": 4, "cond_scale": (1.0, 1.0), "sampler": "ddim"},
    "small": {"clip_dim": 64, "clip_depth": 2, "clip_latent": 32, "clip_steps": 300, "prior_dim": 32,
              "prior_depth": 2, "prior_steps": 600, "unet_dims": (32, 16), "unet_steps": (800, 300),
              "timesteps": 100, "sample_steps": (20, 10), "prior_sample_steps": 16, "cond_scale": (3.0, 1.0),
              "sampler": "dpmpp_2m"},
}
# measured seconds per training step on the quiet 2-core machine with one thread (small preset, 32 px); the 64 px
# decoder costs about 4x per step
SECONDS_PER_STEP = {"clip": 0.12, "prior": 0.04, "decoder": 0.17}


def check_preset(preset: str, image_size: int) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r}: choose one of {sorted(PRESETS)}")
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"--image-size {image_size}: choose one of {list(IMAGE_SIZES)}")
    return PRESETS[preset]


def _train_count(num_images: int, val_fraction: float) -> int:
    return num_images - int(num_images * val_fraction)


def clip_batches(captions: list[str], wanted: int = 36) -> dict[str, Any]:
    """Per-caption batches when captions repeat (2..64 distinct ones, each at least twice): no false negatives in a
    CLIP batch; shuffled batches otherwise.  Never more than the training images."""
    counts: dict[str, int] = {}
    for caption in captions:
        counts[caption] = counts.get(caption, 0) + 1
    train = _train_count(len(captions), 0.05)
    if 2 <= len(counts) <= 64 and min(counts.values()) >= 2 and train >= len(counts):
        copies = max(1, min(wanted // len(counts) or 1, train // len(counts)))
        return {"batches": "per_caption", "batch_size": copies * len(counts)}
    return {"batches": "shuffled", "batch_size": max(1, min(wanted, train))}


def clip_config(preset: str, image_size: int, folder: str, captions: list[str]) -> dict[str, Any]:
    p = check_preset(preset, image_size)
    steps = p["clip_steps"]
    return {
        "kind": "clip",
        "model": {"dim_text": p["clip_dim"], "dim_image": p["clip_dim"], "dim_latent": p["clip_latent"],
                  "num_text_tokens": 49408, "text_seq_len": 16, "text_enc_depth": p["clip_depth"],
                  "text_heads": 4, "text_dim_head": 16, "visual_enc_depth": p["clip_depth"], "visual_heads": 4,
                  "visual_dim_head": 16, "visual_image_size": image_size, "visual_patch_size": image_size // 8,
                  "visual_patch_dropout": 0.0},
        "data": {"source": "image_folder", "path": folder, "image_size": image_size, "captions": True,
                 "val_fraction": 0.05, **clip_batches(captions)},
        "trainer": {"epochs": 10 ** 6, "max_steps": steps, "lr": 1.5e-3, "warmup_steps": max(1, steps // 20),
                    "cosine_decay": True},
        "evaluation": {"validate_every": max(1, steps // 3), "validation_batches": 4, "sample_every": 0},
        "checkpointing": {"best_metric": "zero_shot_accuracy", "best_mode": "max"},
    }


def prior_config(preset: str, image_size: int, embeddings: str, num_images: int) -> dict[str, Any]:
    p = check_preset(preset, image_size)
    steps = p["prior_steps"]
    return {
        "kind": "prior",
        "model": {"net": {"dim": p["prior_dim"], "depth": p["prior_depth"], "dim_head": 16, "heads": 4,
                          "max_text_len": 16},
                  "timesteps": 100, "sample_timesteps": p["prior_sample_steps"], "cond_drop_prob": 0.1,
                  "condition_on_text_encodings": False},
        "data": {"source": "clip_retrieval", "path": embeddings,
                 "splits": {"train": 0.95, "val": 0.05},
                 "batch_size": max(1, min(128, _train_count(num_images, 0.05)))},
        "trainer": {"epochs": 10 ** 6, "max_steps": steps, "lr": 2e-3, "warmup_steps": max(1, steps // 20),
                    "cosine_decay": True},
        "evaluation": {"validate_every": max(1, steps // 3), "validation_batches": 1, "sample_every": 0,
                       "sampler": "ddim", "sample_steps": p["prior_sample_steps"], "cond_scale": 1.0},
        "checkpointing": {"best_metric": "sample_cosine", "best_mode": "max"},
    }


def decoder_config(preset: str, image_size: int, folder: str, num_images: int) -> dict[str, Any]:
    p = check_preset(preset, image_size)
    latent = p["clip_latent"]
    unets = [{"dim": dim, "cond_dim": dim, "image_embed_dim": latent, "dim_mults": [1, 2], "num_resnet_blocks": 1,
              "attn_heads": 2, "attn_dim_head": 16} for dim in p["unet_dims"]]
    return {
        "kind": "decoder",
        "model": {"unet": unets, "image_sizes": [image_size // 2, image_size], "timesteps": p["timesteps"],
                  "predict_v": True, "learned_variance": False, "image_cond_drop_prob": 0.1,
                  "text_cond_drop_prob": 0.0},
        "data": {"source": "image_folder", "path": folder, "image_size": image_size, "captions": True,
                 "val_fraction": 0.05, "batch_size": max(1, min(32, _train_count(num_images, 0.05)))},
        "trainer": {"epochs": 10 ** 6, "lr": 2e-3, "unet_steps": list(p["unet_steps"]),
                    "warmup_steps": [max(1, s // 20) for s in p["unet_steps"]], "cosine_decay": True},
        "evaluation": {"validate_every": 0, "validation_batches": 2, "sample_every": 0, "num_samples": 8,
                       "sampler": p["sampler"], "sample_steps": list(p["sample_steps"]),
                       "cond_scale": list(p["cond_scale"])},
    }


def estimate_seconds(preset: str, image_size: int, with_clip: bool = True) -> float:
    """A rough training time on 2 cores (one thread) from the measured seconds per step."""
    p = check_preset(preset, image_size)
    decoder = SECONDS_PER_STEP["decoder"] * sum(p["unet_steps"]) * (4 if image_size == 64 else 1)
    clip = SECONDS_PER_STEP["clip"] * p["clip_steps"] * (2 if image_size == 64 else 1) if with_clip else 0.0
    return clip + SECONDS_PER_STEP["prior"] * p["prior_steps"] + decoder
