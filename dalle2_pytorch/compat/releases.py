"""Which reference release wrote a checkpoint, and what our models need to compute what it computed.

Key names and shapes narrow the writing release to a range (``detect_release``); a version the
file records, or the caller's ``version=``, must fall inside it.  ``unet_options`` /
``prior_options`` turn a release into the constructor keywords that reproduce its function
(see the per-release table in ``docs/pretrained.md``), and ``normalize_legacy_keys`` applies the
pure renames (``gamma`` -> ``g`` with the always-zero ``beta`` dropped, ``cross_attn.fn.`` ->
``cross_attn.``, the prior's single ``null_text_embed`` -> ``null_text_encodings``).

Releases 0.16.0-0.23.2 are refused: in 0.16.2-0.23.2 every LayerNorm divides by its max and the
prior's position bias is scaled by 1024, and no published checkpoint was written there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

Release = tuple[int, int, int]
INF: Release = (10 ** 6, 0, 0)
LATEST: Release = (1, 15, 6)
# the release assumed for a key-detected range: the first that fits, newest first (a file showing
# nothing old is taken as 1.15.6), then the releases LAION's published files were written with
_DECODER_CANDIDATES = [LATEST, (1, 10, 0), (1, 1, 0), (0, 15, 4)]
_PRIOR_CANDIDATES = [LATEST, (1, 1, 0), (0, 15, 4)]
_UNSUPPORTED = ((0, 16, 0), (0, 23, 2))


def parse_release(version: str | Release) -> Release:
    """``"1.1.0"`` (or ``"v1.1.0"``, ``"1.1"``) -> (1, 1, 0)."""
    if isinstance(version, tuple):
        return version
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?\S*", str(version).strip())
    if not match:
        raise ValueError(f"version must look like '1.1.0', got {version!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def release_text(release: Release) -> str:
    if release == INF:
        return "latest"
    return ".".join("x" if part == 999 else str(part) for part in release)


@dataclass(frozen=True)
class Evidence:
    """One observation about the keys and the release range it implies."""

    what: str
    low: Release
    high: Release  # inclusive; (x, y, 999) stands for "x.y.anything"

    def allows(self, release: Release) -> bool:
        return self.low <= release <= self.high

    def __str__(self) -> str:
        return f"{self.what} (releases {release_text(self.low)}..{release_text(self.high)})"


def _decoder_evidence(state: Mapping[str, torch.Tensor]) -> list[Evidence]:
    evidence = []
    if any(k.endswith(".gamma") for k in state):
        evidence.append(Evidence("LayerNorm gamma/beta parameters", (0, 0, 0), (0, 15, 999)))
    elif any(".cross_attn." in k for k in state):
        evidence.append(Evidence("LayerNorm g parameters", (0, 16, 0), INF))
    if any(".cross_attn.fn." in k for k in state):
        evidence.append(Evidence("cross_attn.fn.* keys", (0, 0, 0), (1, 13, 999)))
    elif any(".cross_attn." in k for k in state):
        evidence.append(Evidence("cross_attn.* keys without .fn", (1, 14, 0), INF))
    for key, value in state.items():
        if re.fullmatch(r"unets\.\d+\.ups\.\d+\.3\.weight", key) and value.dim() == 4 and value.shape[-1] == 4:
            evidence.append(Evidence("ConvTranspose 4x4 upsample (ups.i.3.weight)", (0, 15, 0), (0, 20, 999)))
            break
        if re.fullmatch(r"unets\.\d+\.ups\.\d+\.3\.net\.0\.weight", key):
            evidence.append(Evidence("pixel-shuffle upsample (ups.i.3.net.0.weight)", (0, 21, 0), INF))
            break
    for key, value in state.items():  # an upsampler's output conv reads the low-res image again from 0.24.0
        match = re.fullmatch(r"unets\.([1-9]\d*)\.to_out\.weight", key)
        block = f"unets.{match[1]}.final_resnet_block.block2.project.weight" if match else None
        if block in state:
            if value.shape[1] == state[block].shape[0]:
                evidence.append(Evidence("upsampler output conv without the low-res concat", (0, 0, 0), (0, 23, 999)))
            else:
                evidence.append(Evidence("upsampler output conv with the low-res concat", (0, 24, 0), INF))
            break
    for key, value in state.items():
        if re.fullmatch(r"unets\.\d+\.downs\.\d+\.[04]\.weight", key) and value.dim() == 4 and value.shape[-1] == 4:
            evidence.append(Evidence("4x4 stride-2 downsample (downs.i.{0,4}.weight)", (0, 0, 0), (1, 9, 999)))
            break
        if re.fullmatch(r"unets\.\d+\.downs\.\d+\.[04]\.1\.weight", key) and value.shape[-1] == 1:
            evidence.append(Evidence("SP-conv downsample (downs.i.{0,4}.1.weight)", (1, 10, 0), INF))
            break
    return evidence


def _prior_evidence(state: Mapping[str, torch.Tensor]) -> list[Evidence]:
    evidence = []
    if any(k.endswith(".gamma") for k in state):
        evidence.append(Evidence("LayerNorm gamma/beta parameters", (0, 0, 0), (0, 15, 999)))
    else:
        evidence.append(Evidence("LayerNorm g parameters", (0, 16, 0), INF))
    nulls = {k for k in ("net.null_text_embed", "net.null_text_encodings", "net.null_text_embeds",
                         "net.null_image_embed") if k in state}
    if not nulls:
        evidence.append(Evidence("no learned null embeddings", (0, 0, 0), (0, 23, 0)))
    elif nulls == {"net.null_text_embed"}:
        evidence.append(Evidence("one net.null_text_embed table", (0, 23, 1), (1, 8, 999)))
    elif "net.null_text_embed" not in nulls:
        evidence.append(Evidence("net.null_text_encodings/null_text_embeds/null_image_embed", (1, 9, 0), INF))
    else:
        evidence.append(Evidence(f"an inconsistent set of null embeddings {sorted(nulls)}", INF, (0, 0, 0)))
    return evidence


def detect_release(state: Mapping[str, torch.Tensor], kind: str, *, version: Optional[str] = None,
                   saved_version: Optional[str] = None) -> Release:
    """The release whose function to reproduce for ``state`` (kind ``"decoder"`` or ``"prior"``).

    ``version`` (the caller's) wins, then ``saved_version`` (what the trainer recorded), then the
    first representative release the keys allow; each must agree with every observation of the
    keys, else one ValueError lists what did not match.
    """
    evidence = _decoder_evidence(state) if kind == "decoder" else _prior_evidence(state)
    for given, source in ((version, "version="), (saved_version, "the version recorded in the file")):
        if given is None:
            continue
        release = parse_release(given)
        conflicts = [str(e) for e in evidence if not e.allows(release)]
        if conflicts:
            raise ValueError(f"{source} {given!r} does not fit this {kind} checkpoint; its keys show: "
                             + "; ".join(conflicts) + ". Pass the release that wrote it as version=")
        break
    else:
        candidates = _DECODER_CANDIDATES if kind == "decoder" else _PRIOR_CANDIDATES
        fits = [c for c in candidates if all(e.allows(c) for e in evidence)]
        if not fits:
            raise ValueError(f"cannot tell which DALLE2-pytorch release wrote this {kind} checkpoint; its keys show: "
                             + "; ".join(map(str, evidence)) + ". Pass version= if you know it")
        release = fits[0]
    if _UNSUPPORTED[0] <= release <= _UNSUPPORTED[1]:
        raise ValueError(f"checkpoints written by DALLE2-pytorch {release_text(release)} are not supported "
                         f"(releases 0.16.0-0.23.2 normalise by the max and scale position bias by 1024)")
    return release


def unet_options(release: Release) -> dict:
    """Unet keywords reproducing ``release``'s unet (empty for releases that compute what 1.15.6 does)."""
    options = {}
    if release < (1, 10, 0):
        options["conv4x4_downsample"] = True
    if release < (0, 21, 0):
        options["conv_transpose_upsample"] = True
    if release < (1, 4, 3):
        options["self_attn_sqrt_scale"] = True
    if release < (1, 4, 0):
        options["linear_attn_normalize"] = False
    if release < (0, 24, 0):
        options["lowres_cond_final_concat"] = False
    return options


def prior_options(release: Release) -> tuple[dict, float]:
    """(DiffusionPriorNetwork keywords, factor for the position-bias weights) reproducing ``release``."""
    options: dict = {}
    if release < (1, 9, 0):
        options["null_conditioning"] = "mask" if release <= (0, 23, 0) else "padding"
    if release < (1, 4, 3):
        options["cosine_sim"] = False
    if release < (0, 16, 2):
        options["stable_norm_out"] = False
    bias_scale = 128.0 if (0, 23, 3) <= release <= (1, 4, 2) else 1.0
    return options, bias_scale


def normalize_legacy_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pure renames to 1.15.6 names: ``gamma`` -> ``g`` (the ``beta`` buffer, always zero, is dropped
    after checking), ``cross_attn.fn.`` -> ``cross_attn.``, ``net.null_text_embed`` -> ``net.null_text_encodings``."""
    out = {}
    for key, value in state.items():
        if key.endswith(".beta") and (key[: -len("beta")] + "gamma") in state:
            if torch.count_nonzero(value):
                raise ValueError(f"{key} is not zero: a LayerNorm bias this package's norms do not have")
            continue
        if key.endswith(".gamma"):
            key = key[: -len("gamma")] + "g"
        key = key.replace(".cross_attn.fn.", ".cross_attn.")
        if key == "net.null_text_embed":
            key = "net.null_text_encodings"
        out[key] = value
    return out
