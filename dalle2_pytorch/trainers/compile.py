"""``torch.compile`` of the trained modules, in place.

``module.compile()`` (not ``torch.compile(module)``) keeps the module object, so its state-dict keys, the saved
checkpoints, the EMA copies (made before compiling) and ``--resume`` are exactly those of an eager run; only the
module's ``__call__`` goes through the compiled graph.  The first steps pay for the compilation (minutes on a CPU:
inductor writes and builds C++ kernels); later ones run the compiled code.  Calls with new shapes or modes
(sampling, validation) compile once more.
"""

from __future__ import annotations

from typing import Union

from torch import nn

# torch.compile's modes (``torch._inductor.list_mode_options()``); True means "default"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CompileSetting = Union[bool, str]


def check_compile_mode(name: str, value: object) -> CompileSetting:
    """``value`` as a compile setting (False, True or a mode name); a clear ValueError for anything else.

    The strings ``"true"``/``"false"`` (from a command line or an environment) are read as booleans."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, bool) or (isinstance(value, str) and value in COMPILE_MODES):
        return value
    raise ValueError(f"{name}={value!r}: expected false, true (torch.compile's default mode) or one of the modes "
                     f"{', '.join(COMPILE_MODES)}")


def compile_in_place(modules: dict[str, nn.Module], mode: CompileSetting = True, *,
                     backend: str = "inductor") -> list[str]:
    """Compile each of ``modules`` (path -> module) in place; a module inside another one given here (a VAE's
    discriminator inside the VAE) is compiled as part of the outer one, not again.  Returns the compiled paths."""
    mode = check_compile_mode("compile", mode)
    if mode is False:
        return []
    if not isinstance(backend, str) or not backend:
        raise ValueError(f"backend={backend!r}: expected a torch.compile backend name, e.g. 'inductor'")
    if mode is not True and backend != "inductor":
        raise ValueError(f"compile mode {mode!r} is an inductor mode, but backend={backend!r}: use mode=True with "
                         "another backend, or backend='inductor'")
    outer = [path for path in modules
             if not any(other != path and (other == "" or path.startswith(other + ".")) for other in modules)]
    for path in outer:
        module = modules[path]
        module.compile(backend=backend, mode=None if mode is True else mode)
    return outer


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module.compile()`` was called on this module (its calls go through torch.compile)."""
    return getattr(module, "_compiled_call_impl", None) is not None
