"""The hypercall dispatcher: how a guest's trap becomes a kernel-model service.

One trap instruction per arch (see `Arch.callconv`: x86 `int 0x80`, arm
`svc #0`, powerpc `sc`, s390 `svc 0`, sparc64 `ta 0x6d`), the call number
in one register, up to five arguments in others, the result in one
register. Which calls exist is emu.abi's table; this module binds handlers
to them and dispatches. Every argument is validated here or by the service:
a bad one is a negative errno returned to the guest and a trace line, never
a Python exception.

Built-in services bind to their table entry with `@service(name)`; a test
or an extension declares a call of its own with `@hypercall(nr, name,
nargs)`. A handler returns an int (done at once) or a kernel-routine
generator, which the vCPU then runs one step at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from emu import abi

if TYPE_CHECKING:
    from arch.base import Arch
    from emu.kernel import Kernel
    from emu.kernel.mm import MM
    from emu.physmem import PhysMem


class Caller(Protocol):
    """The vCPU making a call (emu.cpu.VCpu)."""

    index: int


class ServiceHost(Protocol):
    """What a service asks of the machine (emu.machine.Machine implements it;
    services name only this, so they never import the machine that imports them)."""

    arch: Arch
    kernel: Kernel
    mem: PhysMem

    def mm_of(self, cpu: Caller) -> MM:
        """current->mm of the calling vCPU: the process it runs."""
        ...

    def trace_note(self, cpu: Caller, text: str) -> None: ...
    def request_exit(self, cpu: Caller, code: int) -> None: ...
    def exit_group(self, cpu: Caller, code: int) -> None: ...
    def fork_child(self, cpu: Caller, index: int) -> str | None:
        """The process fork(index) makes, or None if it may not."""
        ...

    def start_forked(self, index: int, mm: MM) -> None: ...


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


HYPERCALLS: dict[int, Hypercall] = {}  # the calls that have a handler, by number


def _bind(call: abi.Call, fn: Callable[..., Any]) -> None:
    if call.nr in HYPERCALLS:
        raise ValueError(f"hypercall {call.nr} registered twice")
    HYPERCALLS[call.nr] = Hypercall(call.nr, call.name, call.nargs, fn, call.doc)


def service(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Bind the handler of the call emu.abi names `name`."""
    call = next((c for c in abi.CALLS.values() if c.name == name), None)
    if call is None:
        raise ValueError(f"no hypercall {name!r} in emu.abi")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _bind(call, fn)
        return fn
    return register


def hypercall(nr: int, name: str, nargs: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a call of one's own (not in emu.abi's table) and bind its handler."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        call = abi.Call(nr, name, nargs, (fn.__doc__ or name).strip().splitlines()[0])
        abi.add_call(call)
        _bind(call, fn)
        return fn
    return register


def by_name() -> dict[str, int]:
    return abi.by_name()


def dispatch(m: ServiceHost, cpu: Caller, nr: int, args: tuple[int, ...]) -> Any:
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


@service("exit")
def sys_exit(m: ServiceHost, cpu: Caller, code: int) -> int:
    """Validate and run `exit` (the call itself is described in emu.abi)."""
    m.request_exit(cpu, code)
    return 0


@service("exit_group")
def sys_exit_group(m: ServiceHost, cpu: Caller, code: int) -> int:
    """Validate and run `exit_group` (the call itself is described in emu.abi)."""
    m.exit_group(cpu, code)
    return 0


@service("log")
def sys_log(m: ServiceHost, cpu: Caller, value: int) -> int:
    """Validate and run `log` (the call itself is described in emu.abi)."""
    m.trace_note(cpu, f"guest log {value:#x}")
    return 0


@service("race_begin")
def sys_race_begin(m: ServiceHost, cpu: Caller) -> int:
    """Validate and run `race_begin` (the call itself is described in emu.abi).

    Reached under a schedule only when it is called again after the first
    time (Machine fast-forwards every program up to its first call): a no-op.
    """
    return 0


@service("getcpu")
def sys_getcpu(m: ServiceHost, cpu: Caller) -> int:
    """Validate and run `getcpu` (the call itself is described in emu.abi)."""
    return cpu.index


def check_user_range(m: ServiceHost, addr: int, length: int, align: int | None = None) -> None:
    """Validate a guest (addr, len) pair; raises HypercallError."""
    limit = 1 << m.arch.va_bits
    if length <= 0 or addr < 0 or addr + length > limit:
        raise HypercallError(EINVAL, f"range {addr:#x}+{length:#x} outside the user address space")
    if align and (addr % align or length % align):
        raise HypercallError(EINVAL, f"range {addr:#x}+{length:#x} not {align:#x}-aligned")
