"""Our side of the benchmark: runs one workload with this repository's dalle2_pytorch.

Run it with the twin venv's interpreter (`.bench-venv`, same torch as the reference venv, made by
`setup_reference_venv.sh`) or with the project's `.venv` for a smoke test:

    .bench-venv/bin/python benchmarks/ours_side.py --workload decoder_train [--quick]

It prints one `BENCHMARK_RESULT {json}` line; `compare.py` runs it for you.
"""

from __future__ import annotations

import os
import sys

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCHMARKS_DIR)
# Import this checkout's package even from an interpreter where it is not installed (the project's .venv
# has it editable; putting the checkout first also wins over any other installed dalle2_pytorch).
sys.path.insert(1, REPO_ROOT)

from common import emit, side_arguments  # noqa: E402
from workloads import Backend, run  # noqa: E402


OPT_INS = ("bf16", "channels_last", "keep_norm")


def parse_opt_ins(text: str) -> tuple[str, ...]:
    """'bf16+channels_last' -> ('bf16', 'channels_last'); unknown names are an error naming the known ones."""
    names = tuple(sorted({name for name in text.split("+") if name}))
    unknown = [name for name in names if name not in OPT_INS]
    if unknown:
        raise SystemExit(f"--opt-ins {text!r}: unknown {unknown}; choose from {', '.join(OPT_INS)} joined by '+'")
    return names


def _backend(opt_ins: tuple[str, ...] = (), device: str = "cpu") -> Backend:
    """Our side; ``opt_ins`` switches on the documented fast paths (docs/training.md): bf16 autocast around the
    loss, ``Unet(channels_last=True)``, ``Unet(recompute_norm_in_backward=False)`` (keep_norm)."""
    import torch

    import dalle2_pytorch as ours

    location = os.path.abspath(ours.__file__)
    if not location.startswith(REPO_ROOT + os.sep):
        raise RuntimeError(f"imported dalle2_pytorch from {location}, not from this repository {REPO_ROOT}")

    unet_options = {"channels_last": True} if "channels_last" in opt_ins else {}
    if "keep_norm" in opt_ins:
        unet_options["recompute_norm_in_backward"] = False

    def build_decoder(unet_kwargs: dict, decoder_kwargs: dict):
        return ours.Decoder(unet=ours.Unet(**unet_kwargs, **unet_options), **decoder_kwargs)

    def loss_context():
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)

    def build_prior(network_kwargs: dict, prior_kwargs: dict):
        return ours.DiffusionPrior(net=ours.DiffusionPriorNetwork(**network_kwargs), **prior_kwargs)

    def sample_decoder(decoder, image_embed, steps: int):
        # the reference samples DDIM at the constructor's `sample_timesteps`; name both so nothing can drift
        return decoder.sample(image_embed=image_embed, cond_scale=1.0, sampler="ddim", steps=steps)

    def sample_prior(prior, text_embed, steps: int):
        shape = (text_embed.shape[0], text_embed.shape[-1])
        return prior.p_sample_loop(shape, text_cond=dict(text_embed=text_embed), cond_scale=1.0, sampler="ddim",
                                   timesteps=steps)

    return Backend(
        side="ours", package_version=ours.__version__, build_decoder=build_decoder, build_prior=build_prior,
        sample_decoder=sample_decoder, sample_prior=sample_prior, opt_ins=opt_ins,
        **({"loss_context": loss_context} if "bf16" in opt_ins else {}),
    )


def main() -> None:
    args = side_arguments(__doc__.splitlines()[0])
    opt_ins = parse_opt_ins(args.opt_ins)
    if opt_ins and not args.workload.endswith("_train"):
        raise SystemExit(f"--opt-ins: for the training workloads only, not {args.workload}")
    if args.workload == "prior_train":  # channels_last and keep_norm are unet options: record only what applies
        opt_ins = tuple(name for name in opt_ins if name == "bf16")
    emit(run(_backend(opt_ins, args.device), args.workload, args.quick, args.device))


if __name__ == "__main__":
    main()
