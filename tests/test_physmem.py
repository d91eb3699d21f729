from __future__ import annotations

import pytest

from emu.physmem import FrameAllocator, FrameState, PhysMem, PhysMemError


def test_shared_buffer_roundtrip():
    mem = PhysMem(1 << 20)
    mem.write_int(0x1234, 8, 0x1122334455667788, "little")
    assert mem.read(0x1234, 2) == b"\x88\x77"
    assert mem.read_int(0x1234, 8, "big") == 0x8877665544332211
    with pytest.raises(PhysMemError):
        mem.read(mem.size - 4, 8)


def test_allocator_is_deterministic_and_keeps_history():
    fa = FrameAllocator(PhysMem(1 << 20), 4096, reserved_frames=1, quarantine=4)
    a = fa.alloc("pte table", 0, FrameState.PGTABLE, level="pte")
    b = fa.alloc("data", 1)
    assert (a, b) == (0x1000, 0x2000)
    fa.step = 7
    fa.free(a, 1, "pte_free")
    info = fa.info(a)
    assert info.state is FrameState.FREE and info.free_step == 7 and info.free_cpu == 1
    assert [e.what for e in info.history] == ["allocated as pte table", "pte_free"]


def test_quarantine_delays_reuse_and_double_free_is_caught():
    fa = FrameAllocator(PhysMem(1 << 20), 4096, reserved_frames=1, quarantine=2)
    first = fa.alloc("x", None)
    fa.free(first, None)
    # while quarantined the frame is not handed out again
    assert fa.alloc("y", None) != first
    with pytest.raises(PhysMemError, match="double free"):
        fa.free(first, None)
    gen = fa.info(first).generation
    frees_before_reuse = 0
    while (pa := fa.alloc("z", None)) != first:
        fa.free(pa, None)
        frees_before_reuse += 1
        assert frees_before_reuse < 10
    assert frees_before_reuse >= 2  # the quarantine length
    assert fa.info(first).generation == gen + 1


def test_memory_image_reads_from_physical_zero_and_refuses_outside_ram():
    from arch.base import MemoryImage
    img = MemoryImage(bytes(range(16)))
    assert img.read(0, 4) == bytes([0, 1, 2, 3])
    assert img.read(12, 4) == bytes([12, 13, 14, 15])
    for pa, size in ((-1, 2), (13, 4), (16, 1)):
        with pytest.raises(IndexError):
            img.read(pa, size)
