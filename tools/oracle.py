"""Differential oracle: ptemu's functional translate against Unicorn's own MMU.

For arches where Unicorn's hardware MMU works (UC_TLB_CPU mode: x86 PAE,
ARMv7 short descriptors, s390 DAT; see shared/reference/unicorn_facts.md
section 5), build random page tables with the arch's own encoders in one
memory image, then ask both ptemu (`Arch.translate_functional`) and
Unicorn (`uc_vmem_translate`, called through ctypes because the Python
binding does not wrap it) to translate random addresses for each access
kind, and compare.

Run: python tools/oracle.py [ARCH] [N]   (default: every supported arch, 10000)
"""

from __future__ import annotations

import ctypes
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import unicorn  # noqa: E402
from unicorn.unicorn_py3.unicorn import uclib  # noqa: E402

from arch import get_arch  # noqa: E402
from arch.base import Access, Arch, Translation  # noqa: E402

# Plugins (tools/oracle_<arch>.py) `import oracle`: when this file runs as a
# script, that name must be this module, not a second copy of it.
sys.modules.setdefault("oracle", sys.modules[__name__])

_PROT = {Access.READ: unicorn.UC_PROT_READ, Access.WRITE: unicorn.UC_PROT_WRITE,
         Access.FETCH: unicorn.UC_PROT_EXEC}

uclib.uc_vmem_translate.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_uint64)]
uclib.uc_vmem_translate.restype = ctypes.c_int


def uc_translate(uc: unicorn.Uc, va: int, access: Access) -> int | None:
    out = ctypes.c_uint64()
    err = uclib.uc_vmem_translate(uc._uch, va, _PROT[access], ctypes.byref(out))
    return out.value if err == 0 else None


@dataclass
class OracleCase:
    """A random address space: memory image, root, and a CPU set up on it."""

    arch: Arch
    mem: bytearray
    root: int
    vas: list[int]


# Per-arch builders: (rng, arch, mem_size) -> (mem, root, candidate vas), and
# CPU setup: (uc, root) -> None. Registered by arch name.
BUILDERS: dict[str, Callable[[random.Random, Arch, int], OracleCase]] = {}
SETUPS: dict[str, Callable[[unicorn.Uc, int], None]] = {}
USER_MODE: dict[str, bool] = {}  # does the oracle CPU run in user mode?
# Arch options the compared walker runs with (the facilities Unicorn's CPU
# has), and a Unicorn CPU model to select before the CPU is created.
ARCH_OPTIONS: dict[str, dict[str, object]] = {}
CPU_MODELS: dict[str, int] = {}


def compare(arch_name: str, n: int, seed: int = 1) -> tuple[int, list[str]]:
    """Translate n random (va, access) pairs both ways; returns (agreements, mismatches)."""
    if arch_name not in BUILDERS:
        load_plugins()
    rng = random.Random(seed)
    arch = get_arch(arch_name, **ARCH_OPTIONS.get(arch_name, {}))
    mem_size = 16 << 20
    case = BUILDERS[arch_name](rng, arch, mem_size)
    buf = ctypes.create_string_buffer(bytes(case.mem), mem_size)
    uc = unicorn.Uc(arch.uc_arch, arch.uc_mode)
    if arch_name in CPU_MODELS:
        uc.ctl_set_cpu_model(CPU_MODELS[arch_name])
    uc.ctl_set_tcg_buffer_size(16 << 20)
    uc.mem_map_ptr(0, mem_size, unicorn.UC_PROT_ALL, ctypes.addressof(buf))
    SETUPS[arch_name](uc, case.root)
    view = memoryview(buf).cast("B")
    agree = 0
    bad: list[str] = []
    for _ in range(n):
        va = rng.choice(case.vas) + rng.randrange(arch.page_size) // 4 * 4
        acc = rng.choice(list(Access))
        # A/D bits may be set by either side: compare on the same image
        image = view
        ours = arch.translate_functional(image, case.root, va, acc, USER_MODE[arch_name])
        theirs = uc_translate(uc, va, acc)
        mine = ours.pa(va) if isinstance(ours, Translation) else None
        if mine == theirs:
            agree += 1
        else:
            bad.append(f"{arch_name} {acc.name} {va:#x}: ptemu {ours} unicorn "
                       f"{'fault' if theirs is None else hex(theirs)}")
        uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)
    return agree, bad


# ---- x86 PAE -------------------------------------------------------------------


def _build_x86_pae(rng: random.Random, arch: Arch, mem_size: int) -> OracleCase:
    from arch import x86_pae as x
    mem = bytearray(mem_size)
    nxt = [0x10000]

    def alloc() -> int:
        pa = nxt[0]
        nxt[0] += 0x1000
        return pa

    def put(pa: int, val: int) -> None:
        mem[pa:pa + 8] = val.to_bytes(8, "little")

    root = alloc()
    vas = []
    flag_bits = [x.RW, x.US, x.A, x.D, x.NX, x.P]
    for pdi in range(4):
        if rng.random() < 0.2:
            continue
        pmd = alloc()
        put(root + 8 * pdi, pmd | x.P)
        for pmi in rng.sample(range(512), 6):
            va_pmd = (pdi << 30) | (pmi << 21)
            flags = x.PAGE_TABLE
            for b in flag_bits:
                if rng.random() < 0.15:
                    flags ^= b
            if rng.random() < 0.3:
                page = rng.randrange(1, mem_size >> 21) << 21
                put(pmd + 8 * pmi, page | flags | x.PSE)
                vas += [va_pmd + rng.randrange(512) * 4096 for _ in range(4)]
                continue
            pt = alloc()
            put(pmd + 8 * pmi, pt | flags)
            for pti in rng.sample(range(512), 8):
                pflags = x.P | x.RW | x.US | x.A
                for b in flag_bits:
                    if rng.random() < 0.2:
                        pflags ^= b
                page = rng.randrange(0x800, mem_size >> 12) << 12
                put(pt + 8 * pti, page | pflags)
                vas.append(va_pmd | (pti << 12))
            vas.append(va_pmd | (rng.randrange(512) << 12))  # often empty
    vas.append(0x3 << 30)
    return OracleCase(arch, mem, root, vas)


def _setup_x86_pae(uc: unicorn.Uc, root: int) -> None:
    from unicorn import x86_const as ux
    uc.msr_write(0xC0000080, uc.msr_read(0xC0000080) | (1 << 11))  # EFER.NXE
    uc.reg_write(ux.UC_X86_REG_CR4, uc.reg_read(ux.UC_X86_REG_CR4) | 0x20)  # PAE
    uc.reg_write(ux.UC_X86_REG_CR3, root)
    # PG | WP (supervisor writes honour R/W, as user writes do)
    uc.reg_write(ux.UC_X86_REG_CR0, uc.reg_read(ux.UC_X86_REG_CR0) | 0x80000000 | 0x10000)


BUILDERS["x86-pae"] = _build_x86_pae
SETUPS["x86-pae"] = _setup_x86_pae
USER_MODE["x86-pae"] = False  # Unicorn runs at CPL0: no U/S check


def load_plugins() -> None:
    """Per-arch oracle modules (tools/oracle_<arch>.py) register themselves on import."""
    import importlib
    for path in sorted(Path(__file__).resolve().parent.glob("oracle_*.py")):
        importlib.import_module(path.stem)


def main(argv: list[str]) -> int:
    load_plugins()
    arches = [argv[0]] if argv else sorted(BUILDERS)
    n = int(argv[1]) if len(argv) > 1 else 10000
    rc = 0
    for name in arches:
        agree, bad = compare(name, n)
        print(f"{name}: {agree}/{n} translations agree ({100.0 * agree / n:.2f}%)")
        for line in bad[:10]:
            print("  " + line)
        rc |= bool(bad)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
