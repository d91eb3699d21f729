"""Named variants: ways to get the seed series wrong, switchable per scenario.

A variant is a small mixin class that overrides one routine of the correct
model (or an arch's table policy), registered under a name with
`@variant("name", "why it is wrong")`. `build_kernel_class()` puts the
chosen mixins in front of `Kernel`; the same mechanism loads a user's own
override from a Python file (`[kernel] override = "file.py:Class"`, the
path relative to the scenario): a Kernel mixin overriding routines, or a
`TablePolicy` subclass replacing the arch's pte_alloc/pte_free/
pte_free_defer policy (how a porter tests their own pte_free_defer).
No correct routine tests a variant flag.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu.kernel import Kernel


class VariantError(ValueError):
    pass


# Where a variant can change anything: None if it can on this arch (with its
# options), else why not (the routine it overrides does nothing there).
Applies = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Variant:
    name: str
    doc: str
    mixin: type
    applies: Applies | None = None  # None: every arch

    def not_applicable(self, arch: Any) -> str | None:
        """Why this variant cannot show on `arch` (an Arch instance), or None."""
        return self.applies(arch) if self.applies is not None else None


VARIANTS: dict[str, Variant] = {}


def variant(name: str, doc: str, applies: Applies | None = None) -> Callable[[type], type]:
    def register(cls: type) -> type:
        if name in VARIANTS:
            raise ValueError(f"variant {name!r} registered twice")
        VARIANTS[name] = Variant(name, doc, cls, applies)
        return cls
    return register


def known_variants() -> dict[str, Variant]:
    """Every built-in variant, registered."""
    import emu.kernel.known_variants  # noqa: F401 - registers the built-in variants
    return VARIANTS


def load_override(spec: str, base_dir: Path) -> type:
    """Import `path.py:Class` (path relative to the scenario file)."""
    if ":" not in spec:
        raise VariantError(f"override {spec!r} must be 'file.py:ClassName'")
    file_part, cls_name = spec.rsplit(":", 1)
    path = (base_dir / file_part).resolve()
    if not path.is_file():
        raise VariantError(f"override file {path} not found")
    mod_name = f"ptemu_override_{abs(hash(str(path))) % 10**8}"
    spec_obj = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec_obj)
    sys.modules[mod_name] = module
    try:
        spec_obj.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - user code: report, don't crash
        raise VariantError(f"override file {path} failed to import: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type):
        raise VariantError(f"override file {path} has no class {cls_name!r}")
    return cls


def as_mixin(cls: type) -> type:
    """A user's class as a Kernel mixin: a TablePolicy subclass replaces the
    arch's page-table allocation policy; anything else overrides routines."""
    from emu.kernel.pgalloc import TablePolicy

    if isinstance(cls, type) and issubclass(cls, TablePolicy):
        policy_cls = cls

        class PolicyOverride:
            def make_policy(self) -> TablePolicy:
                return policy_cls()

        PolicyOverride.__name__ = f"PolicyOverride[{cls.__name__}]"
        return PolicyOverride
    return cls


def build_kernel_class(names: list[str], override: str = "", base_dir: Path | None = None) -> type:
    """The Kernel class with the named variants (and a user override) mixed in."""
    import emu.kernel.known_variants  # noqa: F401 - registers the built-in variants

    mixins: list[type] = []
    for n in names:
        if n not in VARIANTS:
            raise VariantError(f"unknown variant {n!r}; known: {', '.join(sorted(VARIANTS)) or 'none'}")
        mixins.append(VARIANTS[n].mixin)
    if override:
        mixins.insert(0, as_mixin(load_override(override, base_dir or Path.cwd())))
    if not mixins:
        return Kernel
    return type("Kernel[" + ",".join(names + ([override] if override else [])) + "]",
                (*mixins, Kernel), {})
