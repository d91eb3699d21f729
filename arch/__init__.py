"""Architecture registry: maps the names users type to arch classes.

Each arch lives in its own module behind the protocol in `arch.base`; this
module only knows their names, so adding an arch is one line here.
"""

from __future__ import annotations

import importlib
import importlib.util

from arch.base import Arch

_ARCHES: dict[str, str] = {
    "x86-pae": "arch.x86_pae:X86Pae",
    "arm": "arch.arm:Arm",
    "powerpc": "arch.powerpc:PowerPC",
    "s390": "arch.s390:S390",
    "sparc64": "arch.sparc64:Sparc64",
}


class UnknownArch(ValueError):
    """The user named an arch ptemu does not have."""


def arch_names() -> list[str]:
    return list(_ARCHES)


def available_arch_names() -> list[str]:
    """Arches whose module is present in this installation."""
    out = []
    for name, target in _ARCHES.items():
        if importlib.util.find_spec(target.split(":")[0]) is not None:
            out.append(name)
    return out


def get_arch(name: str, version: tuple[int, int] | None = None, version_given: bool = False,
             **options: object) -> Arch:
    """An instance of the arch called `name` following Linux `version` (None: the newest).

    `options` are per-arch policy knobs; `version_given` says the user named
    the version, so an option that contradicts it is refused.
    """
    target = _ARCHES.get(name)
    if target is None:
        raise UnknownArch(f"unknown arch {name!r}; known: {', '.join(_ARCHES)}")
    module_name, cls_name = target.split(":")
    if importlib.util.find_spec(module_name) is None:
        raise UnknownArch(f"arch {name!r} is not built into this ptemu yet")
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        inst = cls(**options)
    except TypeError:
        import inspect
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise UnknownArch(
            f"arch {name!r} does not take arch_options {sorted(options)}; "
            f"it takes {', '.join(params) if params else 'none'}") from None
    inst.use_kernel_version(version, version_given)
    return inst
