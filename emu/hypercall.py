"""The hypercall ABI: how guest code asks the kernel model for a service.

One trap instruction per arch (see `Arch.callconv`: x86 `int 0x80`, arm
`svc #0`, powerpc `sc`, s390 `svc 0`, sparc64 `ta 0x6d`), the call number
in one register, up to five arguments in others, the result in one
register. Every argument is validated here or by the service: a bad one is
a negative errno returned to the guest and a trace line, never a Python
exception.

Services are registered with `@hypercall(nr, name, nargs)`. A handler
returns an int (done at once) or a kernel-routine generator, which the
vCPU then runs one step at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emu.cpu import VCpu
    from emu.machine import Machine

EPERM = 1
ENOENT = 2
ENOMEM = 12
EFAULT = 14
EBUSY = 16
EEXIST = 17
EINVAL = 22
ENOSYS = 38
EAGAIN = 11


class HypercallError(Exception):
    """Raised by a handler for a bad argument: becomes -errno for the guest."""

    def __init__(self, errno: int, why: str) -> None:
        super().__init__(why)
        self.errno = errno
        self.why = why


@dataclass(frozen=True)
class Hypercall:
    nr: int
    name: str
    nargs: int
    handler: Callable[..., Any]
    doc: str


HYPERCALLS: dict[int, Hypercall] = {}


def hypercall(nr: int, name: str, nargs: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if nr in HYPERCALLS:
            raise ValueError(f"hypercall {nr} registered twice")
        HYPERCALLS[nr] = Hypercall(nr, name, nargs, fn, (fn.__doc__ or "").strip().splitlines()[0])
        return fn
    return register


def by_name() -> dict[str, int]:
    return {hc.name: hc.nr for hc in HYPERCALLS.values()}


def dispatch(m: Machine, cpu: VCpu, nr: int, args: tuple[int, ...]) -> Any:
    """Returns an int result or a kernel generator; never raises for guest input."""
    hc = HYPERCALLS.get(nr)
    if hc is None:
        m.trace_note(cpu, f"hypercall {nr}: unknown, -ENOSYS")
        return -ENOSYS
    used = args[: hc.nargs]
    m.trace_note(cpu, f"hypercall {hc.name}({', '.join(f'{a:#x}' for a in used)})")
    try:
        return hc.handler(m, cpu, *used)
    except HypercallError as exc:
        m.trace_note(cpu, f"hypercall {hc.name}: -{exc.errno} ({exc.why})")
        return -exc.errno


# ---- the basic services ------------------------------------------------------


@hypercall(0, "exit", 1)
def sys_exit(m: Machine, cpu: VCpu, code: int) -> int:
    """exit(code): this vCPU's program is finished."""
    m.request_exit(cpu, code)
    return 0


@hypercall(1, "log", 1)
def sys_log(m: Machine, cpu: VCpu, value: int) -> int:
    """log(value): put a value in the trace."""
    m.trace_note(cpu, f"guest log {value:#x}")
    return 0


@hypercall(2, "getcpu", 0)
def sys_getcpu(m: Machine, cpu: VCpu) -> int:
    """getcpu(): the vCPU's index."""
    return cpu.index


def check_user_range(m: Machine, addr: int, length: int, align: int | None = None) -> None:
    """Validate a guest (addr, len) pair; raises HypercallError."""
    limit = 1 << m.arch.va_bits
    if length <= 0 or addr < 0 or addr + length > limit:
        raise HypercallError(EINVAL, f"range {addr:#x}+{length:#x} outside the user address space")
    if align and (addr % align or length % align):
        raise HypercallError(EINVAL, f"range {addr:#x}+{length:#x} not {align:#x}-aligned")
