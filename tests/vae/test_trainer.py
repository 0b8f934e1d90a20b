"""VQGanVAETrainer: trains with GAN and gradient penalty on or off, writes loadable checkpoints and grids."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from dalle2_pytorch.vae import VQGanVAE
from dalle2_pytorch.vae.trainer import VQGanVAETrainer
from tests.vae.synthetic_images import coloured_shapes


def tiny_vae(**overrides) -> VQGanVAE:
    kwargs = dict(dim=8, image_size=16, layers=2, vq_codebook_dim=8, vq_codebook_size=16, attn_heads=2,
                  attn_dim_head=8, discr_layers=2, perceptual=None)
    kwargs.update(overrides)
    return VQGanVAE(**kwargs)


def shape_loader(n: int = 16, batch_size: int = 4, zero_to_one: bool = False) -> DataLoader:
    images = coloured_shapes(n, 16, torch.Generator().manual_seed(0))
    if zero_to_one:
        images = (images + 1) / 2
    return DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=False)


@pytest.mark.parametrize("use_gan, penalty_every", [(True, 1), (True, 0), (False, 1)])
def test_trainer_runs_and_writes_a_loadable_checkpoint(tmp_path, use_gan, penalty_every):
    torch.manual_seed(0)
    vae = tiny_vae(use_vgg_and_gan=use_gan)
    trainer = VQGanVAETrainer(vae, data=shape_loader(), num_train_steps=3, lr=1e-3, grad_accum_every=2,
                              apply_grad_penalty_every=penalty_every, ema_update_after_step=0, ema_update_every=1,
                              save_results_every=2, save_model_every=100, results_folder=tmp_path)
    logs = []
    trainer.train(log_fn=logs.append)
    assert [entry["step"] for entry in logs] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logs)
    assert ("discr_loss" in logs[0]) == use_gan

    grid = Image.open(tmp_path / "samples" / "step-00000002.png")
    assert grid.size == (4 * 18 + 2, 3 * 18 + 2)  # 4 images per row; originals, recons, EMA recons

    checkpoint = tmp_path / "checkpoints" / "step-00000003"
    loaded = VQGanVAE.from_pretrained(checkpoint / "model")
    for name, value in vae.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    ema = VQGanVAE.from_pretrained(checkpoint / "ema_model")
    assert ema.has_been_trained

    resumed = VQGanVAETrainer(tiny_vae(use_vgg_and_gan=use_gan), data=shape_loader(), num_train_steps=4,
                              results_folder=tmp_path / "resumed")
    resumed.load(checkpoint)
    assert resumed.step == 3
    for name in trainer.optimizers:
        before = trainer.optimizers[name].state_dict()["state"]
        after = resumed.optimizers[name].state_dict()["state"]
        assert before.keys() == after.keys()
        for index in before:
            assert torch.equal(before[index]["exp_avg"], after[index]["exp_avg"])
    resumed.train_step()
    assert resumed.step == 4


def test_trainer_reduces_the_loss_and_handles_data_range_and_amp(tmp_path):
    torch.manual_seed(0)
    vae = tiny_vae(use_vgg_and_gan=False, l2_recon_loss=True)
    trainer = VQGanVAETrainer(vae, data=shape_loader(zero_to_one=True), num_train_steps=40, lr=3e-3,
                              data_range=(0.0, 1.0), amp=True, save_results_every=1000, save_model_every=1000,
                              results_folder=tmp_path)
    assert trainer.next_batch().min() == -1.0  # [0, 1] data was mapped to [-1, 1]
    losses = [trainer.train_step()["loss"] for _ in range(40)]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_trainer_bad_arguments(tmp_path):
    vae = tiny_vae()
    with pytest.raises(TypeError, match="VQGanVAE"):
        VQGanVAETrainer(torch.nn.Linear(2, 2), data=shape_loader(), num_train_steps=1)
    with pytest.raises(ValueError, match="num_train_steps"):
        VQGanVAETrainer(vae, data=shape_loader(), num_train_steps=0)
    with pytest.raises(ValueError, match="data_range"):
        VQGanVAETrainer(vae, data=shape_loader(), num_train_steps=1, data_range=(1.0, 0.0))
    with pytest.raises(TypeError):
        VQGanVAETrainer(vae, data=shape_loader(), num_train_steps=1, apply_grad_penalty=True)
    single_images = VQGanVAETrainer(vae, data=[torch.zeros(3, 16, 16)], num_train_steps=1, results_folder=tmp_path)
    with pytest.raises(ValueError, match="DataLoader"):
        single_images.train_step()
    empty = VQGanVAETrainer(vae, data=[], num_train_steps=1, results_folder=tmp_path)
    with pytest.raises(ValueError, match="no batches"):
        empty.train_step()
