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

import hashlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import emu.kernel.fork_variants  # noqa: F401 - fork's and COW's
import emu.kernel.known_variants  # noqa: F401 - registers the built-in variants
import emu.kernel.mremap_variants  # noqa: F401 - mremap's
import emu.kernel.notifier_variants  # noqa: F401 - the mmu notifier calls'
import emu.kernel.swap_variants  # noqa: F401 - swap, reclaim and migration's
import emu.kernel.thp_variants  # noqa: F401 - anon THP collapse, split and zap's
import emu.kernel.uffd_variants  # noqa: F401 - userfaultfd's
import emu.kernel.walker_variants  # noqa: F401 - and those of the page walker's users
from emu.kernel import Kernel
from emu.kernel.variant_registry import VARIANTS, Variant, VariantError, variant

__all__ = ["VARIANTS", "Variant", "VariantError", "build_kernel_class", "known_variants",
           "load_override", "variant"]


def known_variants() -> dict[str, Variant]:
    """Every built-in variant, registered."""
    return VARIANTS


def load_override(spec: str, base_dir: Path) -> type:
    """Import `path.py:Class` (path relative to the scenario file)."""
    if ":" not in spec:
        raise VariantError(f"override {spec!r} must be 'file.py:ClassName'")
    file_part, cls_name = spec.rsplit(":", 1)
    path = (base_dir / file_part).resolve()
    if not path.is_file():
        raise VariantError(f"override file {path} not found")
    # a name from the path's digest: str hash() differs between processes
    mod_name = f"ptemu_override_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
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


def build_kernel_class(names: list[str], override: str | Sequence[str] = (),
                       base_dir: Path | None = None) -> type:
    """The Kernel class with the named variants (and the user's overrides) mixed in.

    Overrides come first, in the order given (the first one's method wins);
    at most one of them may replace the arch's table policy.
    """
    from emu.kernel.pgalloc import TablePolicy

    overrides = [override] if isinstance(override, str) else list(override)
    overrides = [o for o in overrides if o]
    mixins: list[type] = []
    for n in names:
        if n not in VARIANTS:
            raise VariantError(f"unknown variant {n!r}; known: {', '.join(sorted(VARIANTS)) or 'none'}")
        mixins.append(VARIANTS[n].mixin)
    users = [load_override(o, base_dir or Path.cwd()) for o in overrides]
    policies = [o for o, cls in zip(overrides, users, strict=True) if issubclass(cls, TablePolicy)]
    if len(policies) > 1:
        raise VariantError(f"overrides {' and '.join(policies)} both replace the table policy; "
                           "give one")
    mixins[:0] = [as_mixin(cls) for cls in users]
    if not mixins:
        return Kernel
    return type("Kernel[" + ",".join(names + overrides) + "]", (*mixins, Kernel), {})
