"""Sampler error against the exact solution, as the number of steps doubles.

Two measurements on data whose optimal denoiser is known in closed form, so that only the
sampler's discretisation is measured (no network):

1. ODE error: data ~ N(mu, s²).  The probability-flow ODE has the exact solution
   x(0) = mu + (x_T - mu) s / sqrt(s² + σ_max²); we report max |x_sampler - x_exact| and the
   observed order log2(err(n) / err(2n)) for each deterministic sampler.
2. Distribution error: data from a two-mode Gaussian mixture, sampled through the full stack
   (NoiseSchedule -> ModelDenoiser -> sample_loop, as the prior and the decoder do); we report
   the error of the sample mean and standard deviation and the mass on the right mode.

Run: ``python benchmarks/sampler_convergence.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math

import torch

from dalle2_pytorch.diffusion import (ModelDenoiser, NoiseSchedule, karras_sigmas, sample_ddim, sample_dpmpp_2m,
                                      sample_euler, sample_heun, sample_loop)

ODE_SAMPLERS = {"ddim": sample_ddim, "euler": sample_euler, "heun": sample_heun, "dpmpp_2m": sample_dpmpp_2m}


def gaussian_denoiser(mu: float, s: float):
    return lambda x, sigma: (x * s ** 2 + mu * torch.as_tensor(sigma, dtype=x.dtype) ** 2) / (s ** 2 + torch.as_tensor(sigma, dtype=x.dtype) ** 2)


def mixture_model(means: list[float], std: float, schedule: NoiseSchedule):
    """A VP x0-predicting 'network' that is the exact posterior mean of a 1-d mixture."""
    m = torch.tensor(means, dtype=torch.float64)

    def model_fn(x_vp, t):
        sigma = schedule.sigmas[t].double().reshape(-1, 1)
        x = x_vp.double() * (1 + sigma ** 2).sqrt()
        var = std ** 2 + sigma ** 2
        post = torch.softmax(-(x.unsqueeze(-1) - m) ** 2 / (2 * var.unsqueeze(-1)), dim=-1)
        return (post * (x.unsqueeze(-1) * std ** 2 + m * sigma.unsqueeze(-1) ** 2) / var.unsqueeze(-1)).sum(-1).float()
    return model_fn


def ode_table(steps_list: list[int]) -> list[str]:
    mu, s, sigma_max = 0.3, 0.5, 80.0
    x_T = torch.linspace(-3, 3, 101, dtype=torch.float64).unsqueeze(1) * math.sqrt(s ** 2 + sigma_max ** 2) + mu
    exact = mu + (x_T - mu) * s / math.sqrt(s ** 2 + sigma_max ** 2)
    rows = ["| sampler | " + " | ".join(f"{n} steps" for n in steps_list) + " | observed order |",
            "|---|" + "---|" * len(steps_list) + "---|"]
    for name, fn in ODE_SAMPLERS.items():
        errs = []
        for n in steps_list:
            sigmas = torch.cat([karras_sigmas(0.002, sigma_max, n), torch.zeros(1, dtype=torch.float64)])
            errs.append((fn(gaussian_denoiser(mu, s), x_T.clone(), sigmas) - exact).abs().max().item())
        order = math.log2(errs[-2] / errs[-1])
        rows.append(f"| {name} | " + " | ".join(f"{e:.2e}" for e in errs) + f" | {order:.2f} |")
    return rows


def distribution_table(steps_list: list[int], n_samples: int) -> list[str]:
    schedule = NoiseSchedule("cosine", 1000)
    means, std = [-2.0, 1.5], 0.3
    true_mean = sum(means) / 2
    true_std = math.sqrt(std ** 2 + sum((x - true_mean) ** 2 for x in means) / 2)
    rows = ["| sampler | steps | NFE | |mean err| | |std err| | mass on right mode (0.5) |", "|---|---|---|---|---|---|"]
    for sampler in ["ddpm", "ddim", "dpmpp_2m", "euler", "heun"]:
        for n in steps_list:
            model, calls = mixture_model(means, std, schedule), []
            den = ModelDenoiser(lambda x, t: calls.append(1) or model(x, t), schedule, "x0")
            x = sample_loop(den, (n_samples, 1), sampler=sampler, steps=n, generator=torch.Generator().manual_seed(0))
            rows.append(f"| {sampler} | {n} | {len(calls)} | {abs(x.mean().item() - true_mean):.3f} | "
                        f"{abs(x.std().item() - true_std):.3f} | {(x > 0).float().mean().item():.3f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and samples (seconds)")
    args = parser.parse_args()
    torch.manual_seed(0)
    ode_steps = [8, 16, 32] if args.quick else [8, 16, 32, 64, 128, 256]
    dist_steps = [5, 10] if args.quick else [5, 10, 20, 50, 250]
    print(f"torch {torch.__version__}\n\n## ODE error vs steps (Gaussian data, exact solution)\n")
    print("\n".join(ode_table(ode_steps)))
    print("\n## Distribution error vs steps (two-mode mixture, full sample_loop stack)\n")
    print("\n".join(distribution_table(dist_steps, 2000 if args.quick else 20000)))


if __name__ == "__main__":
    main()
