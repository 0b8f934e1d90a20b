"""DeepSpeed ZeRO through the accelerate config: 2 CPU processes (gloo) train a decoder and a prior with a ZeRO
engine per part and plainly (tests/trainers/zero_worker.py); the checkpoints the ZeRO run writes load in one process;
settings the trainers cannot honour are errors naming them."""

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, DistributedType
from dalle2_pytorch.trainers.model_trainer import ModelTrainer
from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer
from dalle2_pytorch.trainers.zero import zero_settings
from tests.trainers.helpers import Regression, load_distributed_checkpoint, worker_folder, tiny_prior

pytest.importorskip("deepspeed")


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    return worker_folder(tmp_path_factory, "zero")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["decoder", "prior"])
def test_zero_checkpoints_load_in_one_process_and_match_the_plain_run(zero_run, kind):
    """The ZeRO-2 run's checkpoint is the single-process format: the optimiser state gathered from both processes'
    partitions loads into a plain trainer, and every tensor equals the plain 2-process run's to fp32 rounding."""
    _, state, plain = load_distributed_checkpoint(zero_run, kind)
    moments = [k for k in state if k.startswith("optim.") and ".exp_avg" in k]
    assert moments and all(state[k].abs().sum() > 0 for k in moments)
    for key, value in state.items():
        torch.testing.assert_close(value, plain[key], rtol=1e-4, atol=2e-5, msg=key)


@pytest.fixture
def deepspeed_accelerator(monkeypatch):
    """One process's Accelerator whose state says DeepSpeed with the given config, as `accelerate config` would on a
    GPU machine."""
    accelerator = Accelerator()

    def configure(config: dict, mixed_precision: str = "no"):
        plugin = DeepSpeedPlugin(hf_ds_config=config)
        monkeypatch.setattr(type(accelerator), "distributed_type", property(lambda self: DistributedType.DEEPSPEED))
        monkeypatch.setattr(type(accelerator), "mixed_precision", property(lambda self: mixed_precision))
        monkeypatch.setattr(accelerator.state, "deepspeed_plugins", plugin, raising=False)
        monkeypatch.setattr(accelerator.state, "distributed_type", DistributedType.DEEPSPEED, raising=False)
        return accelerator

    return configure


@pytest.mark.parametrize("config, message", [
    ({"zero_optimization": {"stage": 3}}, "stage 3 partitions the weights: use FSDP"),
    ({"zero_optimization": {"stage": 0}}, "launch without DeepSpeed"),
    ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}, "offloading is not supported"),
    ({"zero_optimization": {"stage": 2, "sub_group_size": 10}}, r"settings \['sub_group_size'\]: not verified"),
    ({"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW", "params": {"lr": 1}}},
     "'optimizer' section: the trainers build each part's AdamW"),
    ({"zero_optimization": {"stage": 1}, "scheduler": {"type": "WarmupLR"}}, "'scheduler' section"),
    ({"zero_optimization": {"stage": 2}, "gradient_accumulation_steps": 4}, "trainer.gradient_accumulation"),
    ({"zero_optimization": {"stage": 2}, "gradient_clipping": 1.0}, "clipping is each part's max_grad_norm"),
    ({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 16}, "the batch is the trainer's"),
    ({"zero_optimization": {"stage": 2}, "train_batch_size": 256}, r"train_batch_size=256: the batch"),
    ({"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}, "bf16.enabled in the DeepSpeed config while"),
])
def test_deepspeed_settings_the_trainers_cannot_honour_are_errors(deepspeed_accelerator, config, message):
    with pytest.raises(NotImplementedError, match=message):
        zero_settings(deepspeed_accelerator(config))


def test_every_problem_is_listed_at_once(deepspeed_accelerator):
    config = {"zero_optimization": {"stage": 3}, "optimizer": {"type": "Adam"}, "gradient_clipping": 2.0}
    with pytest.raises(NotImplementedError) as error:
        zero_settings(deepspeed_accelerator(config))
    assert str(error.value).count("\n  - ") == 3


def test_the_engine_config_keeps_the_maths_of_a_plain_run(deepspeed_accelerator):
    """What accelerate writes for `zero_stage: 2` plus bf16 becomes fp32 engines with unmanaged accumulation (the
    trainer's autocast and accumulation), and only the performance knobs pass through."""
    plugin_config = {"zero_optimization": {"stage": 2, "overlap_comm": True, "reduce_bucket_size": 1000},
                     "bf16": {"enabled": True}, "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
                     "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto"}
    settings = zero_settings(deepspeed_accelerator(plugin_config, mixed_precision="bf16"))
    assert settings.stage == 2
    config = settings.config
    assert config["zero_optimization"] == {"stage": 2, "overlap_comm": True, "reduce_bucket_size": 1000}
    assert config["bf16"] == {"enabled": False} and config["fp16"] == {"enabled": False}
    assert config["managed_gradient_accumulation"] is False and config["gradient_accumulation_steps"] == 1
    assert "gradient_clipping" not in config and "optimizer" not in config


def test_fp16_and_unverified_trainers_are_refused_under_deepspeed(deepspeed_accelerator):
    accelerator = deepspeed_accelerator({"zero_optimization": {"stage": 2}})
    with pytest.raises(NotImplementedError, match="fp16' under DeepSpeed.*use 'bf16'"):
        DiffusionPriorTrainer(tiny_prior(), accelerator=accelerator, mixed_precision="fp16")
    with pytest.raises(NotImplementedError, match="asks for DeepSpeed, which ModelTrainer does not support"):
        ModelTrainer(Regression(), accelerator=accelerator, lr=1e-3)


def test_a_missing_deepspeed_install_is_one_clear_error(deepspeed_accelerator, monkeypatch):
    accelerator = deepspeed_accelerator({"zero_optimization": {"stage": 2}})
    monkeypatch.setitem(__import__("sys").modules, "deepspeed", None)
    with pytest.raises(ImportError, match=r"pip install --no-build-isolation 'unclip-pytorch\[deepspeed\]'"):
        zero_settings(accelerator)
