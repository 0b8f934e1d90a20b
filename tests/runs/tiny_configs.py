"""Tiny run configs shared by the tracker tests."""

from dalle2_pytorch.runs.configs import config_from_dict


def tracked_clip_config(directory, **tracker):
    """A tiny CLIP run on the toy set (12 steps, saved every 4, logged every 2) with the ``tracker`` settings."""
    return config_from_dict({
        "kind": "clip",
        "model": {"dim_text": 16, "dim_image": 16, "dim_latent": 8, "num_text_tokens": 49408, "text_seq_len": 8,
                  "text_enc_depth": 1, "text_heads": 2, "text_dim_head": 8, "visual_enc_depth": 1,
                  "visual_heads": 2, "visual_dim_head": 8, "visual_image_size": 16, "visual_patch_size": 8},
        "data": {"source": "toy", "num_samples": 60, "image_size": 16, "val_fraction": 0.2, "batch_size": 4},
        "trainer": {"epochs": 1, "lr": 1e-3},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1},
        "tracker": {"console": False, "log_every": 2, **tracker},
        "checkpointing": {"directory": str(directory), "save_every": 4},
    })
