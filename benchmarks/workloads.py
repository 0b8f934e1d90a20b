"""The four benchmark workloads, written once and run by both sides.

A side passes a `Backend`: how to build the models from the shared keyword arguments and how to call
sampling (the only calls whose spelling may differ between the two packages).  Data, optimiser, warm-up
and timing are identical by construction.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

from common import (
    Result,
    Sizes,
    decoder_kwargs,
    peak_rss_mb,
    prepare_torch,
    prior_kwargs,
    prior_network_kwargs,
    sizes_for,
    timed_steps,
    unet_kwargs,
)


@dataclass(frozen=True)
class Backend:
    """What one side contributes: its package's classes and its sampling calls."""

    side: str
    package_version: str
    build_decoder: Callable[[dict, dict], Any]  # (unet kwargs, decoder kwargs) -> Decoder
    build_prior: Callable[[dict, dict], Any]  # (network kwargs, prior kwargs) -> DiffusionPrior
    sample_decoder: Callable[[Any, Any, int], Any]  # (decoder, image_embed, steps) -> images
    sample_prior: Callable[[Any, Any, int], Any]  # (prior, text_embed, steps) -> image embeds
    # around each training loss (forward only, like the trainers' autocast); an opt-in such as bf16 sets it
    loss_context: Callable[[], ContextManager] = nullcontext
    opt_ins: tuple[str, ...] = field(default=())  # recorded in every result; empty: the default configuration


def _unit_rows(torch, batch: int, dim: int, device: str):
    """Random unit-norm rows, like CLIP embeddings (drawn on the CPU so both devices see the same numbers)."""
    rows = torch.randn(batch, dim)
    return (rows / rows.norm(dim=-1, keepdim=True)).to(device)


def _random_images(torch, s: Sizes, batch: int, device: str):
    return torch.rand(batch, 3, s.image_size, s.image_size).to(device)


def _synchronized(torch, device: str, function):
    """Wrap `function` so that it returns only when the device has finished its work (honest GPU timing)."""
    if not device.startswith("cuda"):
        return function

    def wrapped():
        out = function()
        torch.cuda.synchronize()
        return out

    return wrapped


def _count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _count_calls(module, methods: tuple[str, ...] = ("forward",)) -> list[int]:
    """Count calls of `module`'s denoising `methods`, so the results show both sides ran the same NFE.

    Wraps the instance's methods (not a hook): guided sampling calls `self.forward` directly, and our prior's
    sampling loop calls `net.guided` (the guided pair in one batch, with the cached text prefix), not `forward`.
    """
    calls = [0]
    for name in methods:
        if not hasattr(module, name):
            continue
        method = getattr(module, name)

        def counting(*args, _method=method, **kwargs):
            calls[0] += 1
            return _method(*args, **kwargs)

        setattr(module, name, counting)
    return calls


def decoder_train(backend: Backend, s: Sizes, quick: bool, device: str) -> Result:
    torch = prepare_torch()
    decoder = backend.build_decoder(unet_kwargs(s), decoder_kwargs(s)).to(device)
    decoder.train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-4)
    images = _random_images(torch, s, s.decoder_batch, device)
    image_embed = _unit_rows(torch, s.decoder_batch, s.image_embed_dim, device)

    def step():
        with backend.loss_context():
            loss = decoder(images, image_embed=image_embed.clone(), unet_number=1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    seconds = timed_steps(_synchronized(torch, device, step), s.warmup_steps, s.timed_steps)
    return _result(backend, "decoder_train", quick, device, s.decoder_batch, seconds,
                   parameters=_count_parameters(decoder))


def prior_train(backend: Backend, s: Sizes, quick: bool, device: str) -> Result:
    torch = prepare_torch()
    prior = backend.build_prior(prior_network_kwargs(s), prior_kwargs(s)).to(device)
    prior.train()
    optimizer = torch.optim.AdamW(prior.parameters(), lr=1e-4)
    text_embed = _unit_rows(torch, s.prior_batch, s.prior_dim, device)
    image_embed = _unit_rows(torch, s.prior_batch, s.prior_dim, device)

    def step():
        # clones: the reference scales `image_embed` in place inside forward
        with backend.loss_context():
            loss = prior(text_embed=text_embed.clone(), image_embed=image_embed.clone())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    warmup = min(s.warmup_steps, 1)  # a reference prior step takes ~30 s on 2 cores
    seconds = timed_steps(_synchronized(torch, device, step), warmup, s.prior_timed_steps)
    return _result(backend, "prior_train", quick, device, s.prior_batch, seconds, parameters=_count_parameters(prior))


def decoder_sample(backend: Backend, s: Sizes, quick: bool, device: str) -> Result:
    torch = prepare_torch()
    decoder = backend.build_decoder(unet_kwargs(s), decoder_kwargs(s)).to(device)
    decoder.eval()
    image_embed = _unit_rows(torch, s.decoder_sample_batch, s.image_embed_dim, device)
    warm_images = _random_images(torch, s, s.decoder_sample_batch, device)

    def warm_up():  # one denoiser pass at the sampling shapes, without paying for a whole sampling loop
        with torch.no_grad():
            decoder(warm_images, image_embed=image_embed.clone(), unet_number=1)

    shapes = []
    calls = _count_calls(decoder.unets[0])

    def sample():
        calls[0] = 0
        with torch.no_grad():
            images = backend.sample_decoder(decoder, image_embed.clone(), s.sample_steps)
        shapes.append(tuple(images.shape))
        return images

    warm_up()
    seconds = timed_steps(_synchronized(torch, device, sample), 0, 1)
    return _result(
        backend, "decoder_sample", quick, device, s.decoder_sample_batch, seconds,
        steps=s.sample_steps, network_calls=calls[0], output_shape=shapes[-1], parameters=_count_parameters(decoder),
    )


def prior_sample(backend: Backend, s: Sizes, quick: bool, device: str) -> Result:
    torch = prepare_torch()
    prior = backend.build_prior(prior_network_kwargs(s), prior_kwargs(s)).to(device)
    prior.eval()
    text_embed = _unit_rows(torch, s.prior_sample_batch, s.prior_dim, device)
    image_embed = _unit_rows(torch, s.prior_sample_batch, s.prior_dim, device)
    shapes = []

    def warm_up():
        with torch.no_grad():
            prior(text_embed=text_embed.clone(), image_embed=image_embed.clone())

    calls = _count_calls(prior.net, ("forward", "guided"))

    def sample():
        calls[0] = 0
        with torch.no_grad():
            embeds = backend.sample_prior(prior, text_embed.clone(), s.sample_steps)
        shapes.append(tuple(embeds.shape))
        return embeds

    warm_up()
    seconds = timed_steps(_synchronized(torch, device, sample), 0, 1)
    return _result(
        backend, "prior_sample", quick, device, s.prior_sample_batch, seconds,
        steps=s.sample_steps, network_calls=calls[0], output_shape=shapes[-1], parameters=_count_parameters(prior),
    )


WORKLOAD_FUNCTIONS = {
    "decoder_train": decoder_train,
    "prior_train": prior_train,
    "decoder_sample": decoder_sample,
    "prior_sample": prior_sample,
}


def _result(backend: Backend, workload: str, quick: bool, device: str, items: int,
            seconds: tuple[list[float], list[float]], **extra) -> Result:
    import torch

    wall, cpu = seconds
    if backend.opt_ins:
        extra["opt_ins"] = "+".join(backend.opt_ins)
    peak_device_mb = 0.0
    if device.startswith("cuda"):
        peak_device_mb = torch.cuda.max_memory_allocated() / 2**20
        extra["device_name"] = torch.cuda.get_device_name()
    return Result(
        side=backend.side, workload=workload, quick=quick, items_per_step=items, step_seconds=wall,
        step_cpu_seconds=cpu, peak_rss_mb=peak_rss_mb(), torch_version=torch.__version__,
        package_version=backend.package_version, device=device, peak_device_mb=peak_device_mb, extra=extra,
    )


def run(backend: Backend, workload: str, quick: bool, device: str = "cpu") -> Result:
    return WORKLOAD_FUNCTIONS[workload](backend, sizes_for(quick), quick, device)
