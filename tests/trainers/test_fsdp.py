"""FSDP through the accelerate config: 2 CPU processes (gloo) train a decoder and a prior sharded and plain
(tests/trainers/fsdp_worker.py); the checkpoints the sharded run writes load in one process."""

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from dalle2_pytorch.decoder import Decoder
from dalle2_pytorch.trainers.checkpoint import rebuild_model
from dalle2_pytorch.trainers.model_trainer import ModelTrainer
from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer
from dalle2_pytorch.trainers.sharding import FSDPSettings, fsdp_settings, wrapped_units
from tests.trainers.helpers import Regression, load_distributed_checkpoint, worker_folder, tiny_decoder, tiny_prior



@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    return worker_folder(tmp_path_factory, "fsdp")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["decoder", "prior"])
def test_fsdp_checkpoints_load_in_one_process_and_match_the_plain_run(fsdp_run, kind):
    """The sharded run's checkpoint folder is the single-process format: it loads into a plain trainer (the
    trained weights equal, to fp32 rounding, the plain 2-process run's), and model/ loads with from_pretrained."""
    trainer, _, plain = load_distributed_checkpoint(fsdp_run, kind)
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, plain[f"model.{key}"], rtol=1e-4, atol=2e-5)
    folder_model = type(trainer.model).from_pretrained(fsdp_run / kind / "model")
    for key, value in folder_model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[key]), key
    ema = rebuild_model(fsdp_run / kind / "trainer.safetensors", use_ema=True)
    ema_folder = type(trainer.model).from_pretrained(fsdp_run / kind / "ema_model")
    for key, value in ema_folder.state_dict().items():
        assert torch.equal(value, ema.state_dict()[key]), key
    if kind == "decoder":
        assert isinstance(folder_model, Decoder)


@pytest.fixture
def fsdp_accelerator(monkeypatch):
    """One process's Accelerator whose state says FSDP, as `accelerate config` would on a GPU machine."""
    accelerator = Accelerator()

    def configure(**plugin):
        state = accelerator.state
        monkeypatch.setattr(type(accelerator), "distributed_type", property(lambda self: DistributedType.FSDP))
        monkeypatch.setattr(state, "fsdp_plugin", FullyShardedDataParallelPlugin(**plugin), raising=False)
        return accelerator

    return configure


@pytest.mark.parametrize("plugin, message", [
    (dict(fsdp_version=1), "set fsdp_version: 2"),
    (dict(fsdp_version=2, cpu_offload=True), "offloading to the CPU is not supported"),
    (dict(fsdp_version=2, activation_checkpointing=True), "the models. own options"),
    (dict(fsdp_version=2, auto_wrap_policy="size_based_wrap", min_num_params=10), "use transformer_based_wrap"),
    (dict(fsdp_version=2, auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=["ResnetBlock"]),
     "none of them is a class of this DiffusionPrior's blocks"),
    (dict(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
          transformer_cls_names_to_wrap=["TransformerBlock"]), r"names \['TransformerBlock'\]: only"),
])
def test_fsdp_settings_the_trainers_cannot_honour_are_errors(fsdp_accelerator, plugin, message):
    accelerator = fsdp_accelerator(**plugin)
    with pytest.raises(NotImplementedError, match=message):
        fsdp_settings(accelerator, tiny_prior())


def test_the_fsdp_policy_accelerate_derives_from_mixed_precision_is_autocast(fsdp_accelerator, monkeypatch):
    accelerator = fsdp_accelerator(fsdp_version=2, mixed_precision_policy="bf16")
    with pytest.raises(NotImplementedError, match=r"policy \(torch.bfloat16\) other than accelerate's mixed_precision"):
        fsdp_settings(accelerator, tiny_prior())
    monkeypatch.setattr(type(accelerator), "mixed_precision", property(lambda self: "bf16"))
    assert fsdp_settings(accelerator, tiny_prior()) == FSDPSettings()


def test_fsdp_settings_follow_the_accelerate_config(fsdp_accelerator):
    accelerator = fsdp_accelerator(fsdp_version=2, reshard_after_forward=False, auto_wrap_policy="transformer_based_wrap",
                                   transformer_cls_names_to_wrap=["ResnetBlock"])
    settings = fsdp_settings(accelerator, tiny_decoder(1))
    assert settings == FSDPSettings(reshard_after_forward=False, wrap_classes=("ResnetBlock",))
    unet = tiny_decoder(1).get_unet(1)
    units = wrapped_units(unet, settings)
    assert units[-1] is unet and len(units) > 1
    assert all(type(u).__name__ == "ResnetBlock" for u in units[:-1])
    assert wrapped_units(unet, FSDPSettings()) == [unet]


def test_fp16_and_unverified_trainers_are_refused_under_fsdp(fsdp_accelerator):
    accelerator = fsdp_accelerator(fsdp_version=2)
    with pytest.raises(NotImplementedError, match="use 'bf16'"):
        DiffusionPriorTrainer(tiny_prior(), accelerator=accelerator, mixed_precision="fp16")
    with pytest.raises(NotImplementedError, match="ModelTrainer does not support: it is verified for DecoderTrainer"):
        ModelTrainer(Regression(), accelerator=accelerator, lr=1e-3)


def test_megatron_is_refused_with_the_reason(monkeypatch):
    accelerator = Accelerator()
    monkeypatch.setattr(type(accelerator), "distributed_type", property(lambda self: DistributedType.MEGATRON_LM))
    with pytest.raises(NotImplementedError, match="Megatron-LM"):
        DiffusionPriorTrainer(tiny_prior(), accelerator=accelerator)
