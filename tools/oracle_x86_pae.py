"""Differential oracle plugin for x86 PAE (32-bit paging with 64-bit entries).

Hostile images, written from raw bits (Intel SDM vol. 3A 4.4, not ptemu's
encoders): four-entry PDPTs, some inside other tables; page directories
and page tables drawn from one pool of frames, so a pointer may reach a
table of another level or one shared with other parents; PDPTEs, PDEs and
PTEs that are well formed, garbage, point outside memory (below and above
4 GiB, up to bit 51), or have any of their 64 bits flipped (R/W, U/S, PS,
XD, every reserved bit). Several CR3s, each probed with EFER.NXE on and
off, at CPL0 (CR0.WP=1) and CPL3 (reached with a real IRET through a GDT
with ring-3 segments, paging still off).

Unicorn's CPU: MAXPHYADDR is TCG_PHYS_ADDR_BITS = 40, so the walker is
compared with `maxphyaddr=40` (ptemu's default is 36, a real PAE part).

Documented deviation: Unicorn checks a present PDPTE only for bits 63:M
(and 62:52); the SDM also reserves bits 2:1 and 8:5 (pgtable_facts.md
7.1). A walk that ptemu stops there with a reserved-bit fault and Unicorn
completes is counted as `pdpte-rsvd-2:1/8:5`.
"""

from __future__ import annotations

import random

import keystone
import oracle
import unicorn
from unicorn import x86_const as ux

from arch import get_arch
from arch import x86_pae as X
from arch.base import Access, Fault, WalkResult

MEM = 16 << 20
HIGH = 1 << 32
UNICORN_PHYS_BITS = 40  # QEMU's TCG_PHYS_ADDR_BITS for i386 as Unicorn builds it
PDPTE_GAP = 0x1E6  # bits 2:1 and 8:5: reserved by the SDM, unchecked by Unicorn
EFER = 0xC0000080
EFER_NXE = 1 << 11
CR0_PG, CR0_WP, CR4_PAE = 1 << 31, 1 << 16, 1 << 5
# Below 64 KiB: the GDT, the IRET stub and its stack for the CPL3 CPU.
GDT, STUB, LANDING, STACK = 0x1000, 0x2000, 0x3000, 0x9000


def _walker(maxphyaddr: int, nxe: bool) -> X.X86Pae:
    return get_arch("x86-pae", maxphyaddr=maxphyaddr, nxe=nxe)  # type: ignore[return-value]


def _seg(access: int) -> int:
    """A flat 4 GiB segment descriptor (base 0, limit 0xFFFFF pages, 32-bit)."""
    return 0xFFFF | (access << 40) | (0xF << 48) | (0xC << 52)


class X86PaeOracle(oracle.Plugin):
    arch_name = "x86-pae"
    mem_size = MEM
    # RAM below and above 4 GiB: tables and frames at PAs >= 4 GiB, so a
    # pointer's high word matters (Unicorn maps and walks them: checked).
    regions = ((0, MEM), (HIGH, MEM))

    def build(self, rng: random.Random) -> oracle.Case:
        mem = self.new_image()
        filled: dict[int, list[int]] = {}
        frames = [f << 12 for f in rng.sample(range(0x100, MEM >> 12), 32)]
        frames += [HIGH + (f << 12) for f in rng.sample(range(0x100, MEM >> 12), 16)]
        rng.shuffle(frames)
        pds, pts = frames[:20], frames[20:44]
        pool = pds + pts

        def frame(align: int) -> int:
            return rng.choice((0, HIGH)) + (rng.randrange(MEM // align) * align)

        def put(pa: int, val: int) -> None:
            mem[pa:pa + 8] = (val & ((1 << 64) - 1)).to_bytes(8, "little")

        def outside() -> int:
            top = rng.choice((32, 36, 40, 40, 52))
            return rng.randrange(MEM, 1 << top)

        def target(prefer: list[int]) -> int:
            r = rng.random()
            if r < 0.85:
                return rng.choice(prefer)
            if r < 0.9:
                return rng.choice(pool)
            if r < 0.93:
                return frame(4096)
            return outside() & ~0xFFF

        def flags(p_rw_us: float) -> int:
            f = X.P
            for b in (X.RW, X.US, X.A, X.D, X.PWT, X.PCD, X.G):
                if rng.random() < p_rw_us:
                    f |= b
            if rng.random() < 0.3:
                f |= X.NX
            return f

        def entry(kind: str, prefer: list[int]) -> int:
            r = rng.random()
            if r < 0.04:
                return rng.getrandbits(64)
            if r < 0.06:
                return rng.getrandbits(64) & ~X.P
            if kind == "pdpte":
                val = X.P | (target(prefer) & ((1 << 52) - 1))
                if rng.random() < 0.2:
                    val |= rng.choice((X.PWT, X.PCD, 1 << 9, 1 << 10, 1 << 11))
                if rng.random() < 0.1:  # R/W, U/S, A, D, PS, G: reserved in a PDPTE
                    val |= 1 << rng.choice((1, 2, 5, 6, 7, 8))
                return oracle.flip_bits(rng, val, 64, 0.4)
            if kind == "pde" and rng.random() < 0.3:
                base = frame(1 << 21) if rng.random() < 0.8 else outside() & ~0x1FFFFF
                val = base | flags(0.9) | X.PSE
                if rng.random() < 0.2:
                    val |= 1 << 12  # PAT
            else:
                base = target(prefer) if kind == "pde" else \
                    (frame(4096) if rng.random() < 0.85 else outside() & ~0xFFF)
                val = base | flags(0.9)
                if kind == "pde":
                    val &= ~X.PSE
            return oracle.flip_bits(rng, val, 64, 0.3)

        for pd in pds:
            idx = rng.sample(range(512), 24)
            filled[pd] = idx
            for i in idx:
                put(pd + 8 * i, entry("pde", pts))
        for pt in pts:
            idx = rng.sample(range(512), 24)
            filled[pt] = idx
            for i in idx:
                put(pt + 8 * i, entry("pte", []))
        contexts = []
        pa_mask = (1 << 52) - 1

        def next_table(e: int) -> int | None:
            return e & pa_mask & ~0xFFF if e & X.P else None

        levels = (oracle.TableLevel(30, 2, 8, next_table), oracle.TableLevel(21, 9, 8, next_table),
                  oracle.TableLevel(12, 9, 8, None))
        for k in range(4):
            if k < 2:
                pdpt = (rng.randrange(0x10, 0x100) << 12) + rng.randrange(128) * 32
            else:  # inside a page directory or page table: aliased with its entries
                pdpt = rng.choice([t for t in pool if t < HIGH]) + rng.randrange(128) * 32
            for i in range(4):
                if k < 2 or rng.random() < 0.5:
                    put(pdpt + 8 * i, entry("pdpte", pds))
            filled[pdpt] = [0, 1, 2, 3]
            for nxe in (True, False):
                contexts.append(oracle.Context(_walker(UNICORN_PHYS_BITS, nxe), pdpt, pdpt, levels,
                                               {"nxe": nxe}, f"cr3={pdpt:#x} nxe={int(nxe)}"))
        return oracle.Case(mem, contexts, filled)

    def cpu(self, uc: unicorn.Uc, user: bool) -> None:
        if not user:
            return  # UC_MODE_32 starts in flat protected mode at CPL0
        gdt = [0, _seg(0x9A), _seg(0x92), _seg(0xFA), _seg(0xF2)]
        uc.mem_write(GDT, b"".join(d.to_bytes(8, "little") for d in gdt))
        uc.reg_write(ux.UC_X86_REG_GDTR, (0, GDT, 8 * len(gdt) - 1, 0))
        ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_32)
        stub, _ = ks.asm(f"push 0x23; push {STACK:#x}; pushfd; push 0x1b; push {LANDING:#x}; iretd",
                         STUB)
        uc.mem_write(STUB, bytes(stub))
        uc.mem_write(LANDING, b"\x90\x90")
        uc.reg_write(ux.UC_X86_REG_ESP, STACK)
        uc.emu_start(STUB, LANDING)
        assert uc.reg_read(ux.UC_X86_REG_CS) & 3 == 3, "the IRET did not reach CPL3"

    def enter(self, uc: unicorn.Uc, ctx: oracle.Context) -> None:
        efer = uc.msr_read(EFER)
        uc.msr_write(EFER, efer | EFER_NXE if ctx.regs["nxe"] else efer & ~EFER_NXE)
        uc.reg_write(ux.UC_X86_REG_CR4, uc.reg_read(ux.UC_X86_REG_CR4) | CR4_PAE)
        uc.reg_write(ux.UC_X86_REG_CR3, ctx.root)
        uc.reg_write(ux.UC_X86_REG_CR0, uc.reg_read(ux.UC_X86_REG_CR0) | CR0_PG | CR0_WP)
        uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)

    def deviation(self, case: oracle.Case, ctx: oracle.Context, va: int, acc: Access, user: bool,
                  ours: WalkResult, theirs: int | None) -> str | None:
        if not (isinstance(ours, Fault) and ours.level == "pgd" and ours.reason == "bad-entry"):
            return None
        pdpte = ((ctx.root & ~0x1F) + ((va >> 30) & 3) * 8, 8)
        if oracle.agrees_without(case, ctx, pdpte, PDPTE_GAP, va, acc, user, theirs):
            return "pdpte-rsvd-2:1/8:5"
        return None


oracle.register(X86PaeOracle())
