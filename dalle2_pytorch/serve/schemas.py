"""The JSON API's request and response bodies (pydantic v2: bad input is a 422 naming the field)."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dalle2_pytorch.diffusion.samplers import SAMPLERS

MAX_PROMPT_CHARS = 300
MAX_PROMPT_BYTES = 1024  # UTF-8: 300 characters of most scripts fit; 300 emoji do not
MAX_PROMPTS = 8
MAX_IMAGES_PER_PROMPT = 8
MAX_STEPS = 1000
MAX_SEED = 2 ** 31 - 1
SamplerName = Literal[tuple(sorted(SAMPLERS))]  # type: ignore[valid-type]


def check_text(prompt: str) -> None:
    """A prompt is text the tokenizer can take: valid Unicode (no lone surrogate, which JSON's ``\\udc80`` escapes
    can carry), at most :data:`MAX_PROMPT_BYTES` in UTF-8, and no control characters other than whitespace."""
    try:
        size = len(prompt.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise ValueError(f"a prompt must be valid Unicode text; character {error.start} is a lone surrogate "
                         f"({prompt[error.start]!r})") from None
    if size > MAX_PROMPT_BYTES:
        raise ValueError(f"a prompt may have at most {MAX_PROMPT_BYTES} bytes in UTF-8, got {size}")
    control = next((i for i, c in enumerate(prompt) if ord(c) < 32 and c not in "\t\n\r"), None)
    if control is not None:
        raise ValueError(f"a prompt must not hold control characters; character {control} is {prompt[control]!r}")


class GenerateRequest(BaseModel):
    """``POST /v1/generate``.  Settings left out (null) take the checkpoint's defaults."""

    model_config = ConfigDict(extra="forbid")

    prompt: Union[str, list[str]] = Field(description="one prompt, or a list of up to 8")
    n: int = Field(1, ge=1, le=MAX_IMAGES_PER_PROMPT, description="images per prompt")
    cond_scale: Optional[float] = Field(None, ge=0.0, le=30.0, description="decoder guidance scale")
    prior_cond_scale: Optional[float] = Field(None, ge=0.0, le=30.0, description="prior guidance scale")
    sampler: Optional[SamplerName] = Field(None, description="decoder sampler")
    steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS, description="decoder sampling steps (every unet)")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="image i uses seed + i; random when null")

    @field_validator("prompt")
    @classmethod
    def _check_prompts(cls, value: Union[str, list[str]]) -> Union[str, list[str]]:
        prompts = [value] if isinstance(value, str) else value
        if not prompts:
            raise ValueError("give at least one prompt")
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request, got {len(prompts)}")
        for prompt in prompts:
            if not prompt.strip():
                raise ValueError("a prompt must not be empty")
            if len(prompt) > MAX_PROMPT_CHARS:
                raise ValueError(f"a prompt may have at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}")
            check_text(prompt)
        return value

    def prompts(self) -> list[str]:
        return [self.prompt.strip()] if isinstance(self.prompt, str) else [p.strip() for p in self.prompt]


class ImageInfo(BaseModel):
    url: str
    prompt: str
    seed: int


class JobView(BaseModel):
    """``GET /v1/jobs/{id}``: ``status`` is queued, running, done or failed; ``progress`` in [0, 1]."""

    id: str
    status: Literal["queued", "running", "done", "failed"]
    progress: float
    error: Optional[str] = None
    settings: dict
    images: list[ImageInfo]
    batch_size: Optional[int] = Field(None, description="images in the forward pass that served this job")
    seconds: Optional[float] = Field(None, description="time from submission to completion")


class Accepted(BaseModel):
    id: str
    status_url: str
    events_url: str
