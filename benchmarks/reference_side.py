"""Reference side of the benchmark: runs one workload with DALLE2-pytorch 1.15.6.

Run it with the reference venv's interpreter (made by `setup_reference_venv.sh`), one workload per
process so that the peak RSS belongs to that workload alone:

    .ref-venv/bin/python benchmarks/reference_side.py --workload decoder_train [--quick]

It prints one `BENCHMARK_RESULT {json}` line; `compare.py` runs it for you.
"""

from __future__ import annotations

import os
import sys

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCHMARKS_DIR)
# Our package is also called `dalle2_pytorch`: make sure the repository checkout cannot shadow the
# reference installed in this venv's site-packages.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != REPO_ROOT]

from common import emit, side_arguments  # noqa: E402
from workloads import Backend, run  # noqa: E402


def _import_reference():
    import dalle2_pytorch
    from dalle2_pytorch.version import __version__

    location = os.path.abspath(dalle2_pytorch.__file__)
    if location.startswith(REPO_ROOT + os.sep) and ".ref-venv" not in location:
        raise RuntimeError(f"imported this repository's dalle2_pytorch ({location}), not the reference package")
    return dalle2_pytorch, __version__


def _backend() -> Backend:
    reference, version = _import_reference()

    def build_decoder(unet_kwargs: dict, decoder_kwargs: dict):
        return reference.Decoder(unet=reference.Unet(**unet_kwargs), **decoder_kwargs)

    def build_prior(network_kwargs: dict, prior_kwargs: dict):
        return reference.DiffusionPrior(net=reference.DiffusionPriorNetwork(**network_kwargs), **prior_kwargs)

    def sample_decoder(decoder, image_embed, steps: int):
        # DDIM at `sample_timesteps` (== steps, set in the constructor), classifier-free guidance off
        return decoder.sample(image_embed=image_embed, cond_scale=1.0)

    def sample_prior(prior, text_embed, steps: int):
        # `sample()` needs a CLIP; with precomputed text embeds the reference samples through p_sample_loop
        shape = (text_embed.shape[0], prior.image_embed_dim)
        return prior.p_sample_loop(shape, text_cond=dict(text_embed=text_embed), cond_scale=1.0, timesteps=steps)

    return Backend(
        side="reference", package_version=version, build_decoder=build_decoder, build_prior=build_prior,
        sample_decoder=sample_decoder, sample_prior=sample_prior,
    )


def main() -> None:
    args = side_arguments(__doc__.splitlines()[0])
    if args.opt_ins:
        raise SystemExit(f"--opt-ins {args.opt_ins!r}: the reference side runs its default configuration only")
    emit(run(_backend(), args.workload, args.quick, args.device))


if __name__ == "__main__":
    main()
