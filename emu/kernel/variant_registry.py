"""The registry of named variants: what a variant is and the name it goes by.

Owns `Variant`, the `VARIANTS` table and the `@variant(name, doc)`
decorator that built-in variants (emu.kernel.known_variants) and tests
register with. Building a kernel class from variant names and loading a
user's override file is emu.kernel.variants' job; this module imports
neither, so both can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
