"""Which kernel-model routines are running at this moment, read from the Python stack.

For reports: "pte table 0xd000 freed by FlushThenFree.free_defer <
retract_page_tables < khugepaged_scan_file". Kernel routines are
generators that delegate with `yield from`, so while one runs, its callers'
frames are on the stack. Only frames of the mm model (`emu.kernel`, less
the scheduling machinery) and of the user's overrides count. Used only when
the trace is on (a report's replay), never in the exploration's hot path.
"""

from __future__ import annotations

import sys

_MACHINERY = ("emu.kernel.core", "emu.kernel.sync", "emu.kernel.task", "emu.kernel.steps")
_SKIP = {"release_table_frame", "<lambda>", "check_table_frame"}


def kernel_callers(depth: int = 4) -> list[str]:
    """The innermost `depth` kernel routines on the stack, innermost first."""
    out: list[str] = []
    f = sys._getframe(1)
    while f is not None and len(out) < depth:
        mod = f.f_globals.get("__name__", "")
        if (mod.startswith("emu.kernel") and mod not in _MACHINERY) \
                or mod.startswith("ptemu_override_"):
            name = f.f_code.co_qualname
            short = name.rsplit(".", 2)[-2:] if "." in name else [name]
            # a policy or a variant by class; the model's mixins by Linux's routine name
            cls = short[0] if len(short) == 2 else ""
            label = short[-1] if not cls[:1].isupper() or cls.endswith("Mixin") \
                or cls == "Kernel" else ".".join(short)
            if short[-1] not in _SKIP and (not out or out[-1] != label):
                out.append(label)
        f = f.f_back
    return out
