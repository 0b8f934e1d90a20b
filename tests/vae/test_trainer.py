"""VQGanVAETrainer: trains with GAN and gradient penalty on or off, writes loadable checkpoints and grids."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from dalle2_pytorch.vae import VQGanVAE
from dalle2_pytorch import VQGanVAETrainer
from tests.factories import tiny_vae
from tests.vae.synthetic_images import coloured_shapes


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
    with pytest.raises(TypeError, match="data must be an iterable of image batches .*got int"):
        VQGanVAETrainer(vae, data=5, num_train_steps=1)
    with pytest.raises(TypeError):
        VQGanVAETrainer(vae, data=shape_loader(), num_train_steps=1, apply_grad_penalty=True)
    single_images = VQGanVAETrainer(vae, data=[torch.zeros(3, 16, 16)], num_train_steps=1, results_folder=tmp_path)
    with pytest.raises(ValueError, match="DataLoader"):
        single_images.train_step()
    empty = VQGanVAETrainer(vae, data=[], num_train_steps=1, results_folder=tmp_path)
    with pytest.raises(ValueError, match="no batches"):
        empty.train_step()


def _trainer_state(trainer: VQGanVAETrainer) -> dict[str, torch.Tensor]:
    state, _ = trainer.trainer.training_state()
    return {key: value for key, value in state.items() if not key.startswith("rng.")}


def test_resume_is_bitwise_exact(tmp_path):
    """Train 5 steps with a checkpoint at step 2; a fresh trainer resumed from it ends bit for bit the same."""
    images = coloured_shapes(20, 16, torch.Generator().manual_seed(1))
    # 5 batches a pass, so passes end mid-step; each pass's iter() draws from the global RNG, like training does
    loader = DataLoader(TensorDataset(images), batch_size=4, shuffle=False)
    settings = dict(data=loader, num_train_steps=5, lr=1e-3, grad_accum_every=2, apply_grad_penalty_every=2,
                    ema_update_after_step=1, ema_update_every=2, save_results_every=1000, save_model_every=2)
    torch.manual_seed(0)
    straight = VQGanVAETrainer(tiny_vae(), results_folder=tmp_path / "straight", **settings)
    logs = []
    straight.train(log_fn=logs.append)
    rng_after = torch.get_rng_state()
    checkpoint = tmp_path / "straight" / "checkpoints" / "step-00000002"
    assert (checkpoint / "model" / "config.json").is_file() and (checkpoint / "trainer.safetensors").is_file()

    torch.manual_seed(123)  # other initial weights and RNG: everything must come from the checkpoint
    resumed = VQGanVAETrainer(tiny_vae(), results_folder=tmp_path / "resumed", **settings)
    resumed.load(checkpoint)
    assert resumed.step == 2 and resumed.counters["batch_in_epoch"] == 3 and resumed.counters["epoch"] == 1
    resumed_logs = []
    resumed.train(log_fn=resumed_logs.append)
    assert resumed_logs == logs[2:]
    assert resumed.counters == straight.counters
    assert torch.equal(torch.get_rng_state(), rng_after)
    expected, actual = _trainer_state(straight), _trainer_state(resumed)
    assert expected.keys() == actual.keys()
    different = [key for key in expected if not torch.equal(expected[key], actual[key])]
    assert not different, different[:10]


def test_checkpoint_folders_are_the_trainers_format(tmp_path):
    """The folder is the one of the config-driven runs: model/, ema_model/, training_state.json, trainer.safetensors;
    a load restores the EMA (with the VAE's integer step counter) and skips the batches already drawn."""
    from dalle2_pytorch.trainers.checkpoint import read_checkpoint_meta, read_counters

    torch.manual_seed(0)
    trainer = VQGanVAETrainer(tiny_vae(use_vgg_and_gan=False), data=shape_loader(n=12), num_train_steps=2,
                              ema_update_after_step=0, ema_update_every=1, results_folder=tmp_path)
    trainer.train()
    folder = tmp_path / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in folder.iterdir()) == ["ema_model", "model", "trainer.safetensors",
                                                        "training_state.json"]
    assert read_counters(folder) == {"step": 2, "epoch": 0, "batch_in_epoch": 2, "samples_seen": 8}
    assert set(read_checkpoint_meta(folder / "trainer.safetensors")["parts"]) == {"model"}
    ema = VQGanVAE.from_pretrained(folder / "ema_model")
    assert int(ema.training_steps_seen) == int(trainer.vae.training_steps_seen) == 2
    for name, value in trainer.ema_vae.state_dict().items():
        assert torch.equal(value, ema.state_dict()[name]), name
    short = VQGanVAETrainer(tiny_vae(use_vgg_and_gan=False), data=shape_loader(n=4), num_train_steps=3,
                            results_folder=tmp_path / "short")
    with pytest.raises(ValueError, match="resume with the same data"):
        short.load(folder)
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        short.load(tmp_path / "samples")


def test_discriminator_learning_rate_and_clipping_reach_the_core(tmp_path):
    vae = tiny_vae()
    trainer = VQGanVAETrainer(vae, data=shape_loader(), num_train_steps=1, lr=1e-3, discr_lr=5e-4,
                              max_grad_norm=0.5, results_folder=tmp_path)
    parts = trainer.trainer.parts
    assert set(trainer.optimizers) == {"gen", "discr"}
    assert parts["model"].base_lr == 1e-3 and parts["discr"].base_lr == 5e-4
    assert parts["model"].max_grad_norm == parts["discr"].max_grad_norm == 0.5
    discr_ids = {id(p) for p in vae.discr.parameters()}
    assert not any(id(p) in discr_ids for p in parts["model"].params)
    assert {id(p) for p in parts["discr"].params} == discr_ids
    trainer.train_step()
    assert parts["model"].step == parts["discr"].step == 1


def test_a_config_driven_run_and_the_vae_trainer_share_one_checkpoint_format(tmp_path):
    """`dalle2 train` (TrainingRun, kind vae) writes a folder that VQGanVAETrainer.load resumes, and vice versa."""
    from dalle2_pytorch.runs import TrainingRun, config_from_dict
    from dalle2_pytorch.trainers.checkpoint import load_checkpoint

    model = dict(dim=8, image_size=16, layers=1, vq_codebook_dim=4, vq_codebook_size=16, use_vgg_and_gan=False,
                 attn_heads=1, attn_dim_head=8)
    config = config_from_dict({
        "kind": "vae", "model": model,
        "data": {"source": "toy", "num_samples": 20, "image_size": 16, "val_fraction": 0.2, "batch_size": 8},
        "trainer": {"epochs": 1, "lr": 1e-3, "ema_beta": 0.9},
        "evaluation": {"validate_every": 0, "sample_every": 0},
        "tracker": {"console": False, "jsonl": False},
        "checkpointing": {"directory": str(tmp_path / "run"), "save_every": 100},
    })
    run = TrainingRun(config, show_progress=False)
    run.run()
    trainer = VQGanVAETrainer(VQGanVAE(**model), data=shape_loader(), num_train_steps=5, results_folder=tmp_path)
    trainer.load(tmp_path / "run" / "latest")
    assert trainer.step == run.counters["step"] == 2
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, trainer.vae.state_dict()[name]), name
    trainer.train_step()
    trainer.save(tmp_path / "back")
    assert load_checkpoint(tmp_path / "back", run.trainer)["step"] == 3
    assert run.trainer.parts["model"].step == 3


FIRST_FORMAT = Path(__file__).parents[1] / "fixtures" / "vae_trainer_2026_11"


def test_a_folder_of_the_first_trainer_format_resumes(tmp_path):
    """tests/fixtures/vae_trainer_2026_11/checkpoint was written by the trainer before it moved onto the trainers'
    core (make_checkpoint.py there, run at that commit): weights, EMA, optimisers and step come back, and training
    goes on and saves today's format."""
    from safetensors.torch import load_file

    folder = FIRST_FORMAT / "checkpoint"
    trainer = VQGanVAETrainer(tiny_vae(), data=shape_loader(batch_size=4), num_train_steps=5,
                              ema_update_after_step=0, ema_update_every=1, results_folder=tmp_path)
    trainer.load(folder)
    assert trainer.step == 3
    for name, value in load_file(folder / "model" / "model.safetensors").items():
        assert torch.equal(trainer.vae.state_dict()[name], value), name
    for name, value in load_file(folder / "ema_model" / "model.safetensors").items():
        assert torch.equal(trainer.ema_vae.state_dict()[name], value), name
    saved = load_file(folder / "trainer.safetensors")
    discr = {id(p) for p in trainer.vae.discr.parameters()}
    first_order = {"gen": [p for p in trainer.vae.parameters() if id(p) not in discr],
                   "discr": list(trainer.vae.discr.parameters())}
    for name, parameters in first_order.items():  # moments by parameter, whatever today's parameter groups are
        state = trainer.optimizers[name].state
        for index, parameter in enumerate(parameters):
            assert torch.equal(state[parameter]["exp_avg"], saved[f"optim.{name}.{index}.exp_avg"])
            assert torch.equal(state[parameter]["exp_avg_sq"], saved[f"optim.{name}.{index}.exp_avg_sq"])
    trainer.train_step()
    assert trainer.step == 4
    written = trainer.save(tmp_path / "again")
    assert (written / "model").is_dir() and not (written / "trainer.json").exists()


def test_a_first_format_folder_with_other_optimisers_is_one_clear_error(tmp_path):
    trainer = VQGanVAETrainer(tiny_vae(use_vgg_and_gan=False), data=shape_loader(), num_train_steps=5,
                              results_folder=tmp_path)
    with pytest.raises(ValueError, match="use_vgg_and_gan"):
        trainer.load(FIRST_FORMAT / "checkpoint")
