"""Footprints for partial-order reduction, key by key: what each kernel step
and each logged physical access touches, and which footprints conflict.
A wrong key or mode here makes DPOR skip an interleaving that matters (or
explore ones that do not)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from emu.kernel import steps as ks
from emu.kernel.sync import RwSem, Spinlock
from emu.sched.footprint import ALL, FootprintRecorder, conflict, merge


def recorder(ncpus: int = 3) -> FootprintRecorder:
    rec = FootprintRecorder()
    rec.attach(SimpleNamespace(mem=SimpleNamespace(frame_shift=12, log=None), ncpus=ncpus))
    return rec


def test_merge_keeps_one_mode_and_makes_two_a_write():
    fp: dict = {}
    merge(fp, ("k",), "r")
    merge(fp, ("k",), "r")
    assert fp == {("k",): "r"}
    merge(fp, ("k",), "c")
    assert fp == {("k",): "w"}
    merge(fp, ("j",), "c")
    merge(fp, ("j",), "c")
    assert fp[("j",)] == "c"


@pytest.mark.parametrize("a, b, clash", [
    ({("x",): "w"}, {("y",): "w"}, False),
    ({("x",): "r"}, {("x",): "r"}, False),
    ({("x",): "c"}, {("x",): "c"}, False),
    ({("x",): "r"}, {("x",): "c"}, True),
    ({("x",): "r"}, {("x",): "w"}, True),
    ({("x",): "w"}, {("x",): "c"}, True),
    ({("y",): "r", ("z",): "r", ("x",): "r"}, {("x",): "w"}, True),
    ({("y",): "r"}, ALL, True),
    ({}, ALL, True),
])
def test_conflict_is_a_shared_key_with_a_write_or_a_read_against_an_update(a, b, clash):
    assert conflict(a, b) is clash and conflict(b, a) is clash


def test_kernel_steps_touch_their_keys():
    lock, sem = Spinlock("ptl"), RwSem("mmap_lock")
    cases = [
        (ks.SpinLock(lock), {("lock", "ptl"): "w"}),
        (ks.SpinUnlock(lock), {}),
        (ks.DownRead(sem), {("sem", "mmap_lock"): "c"}),
        (ks.DownWrite(sem), {("sem", "mmap_lock"): "w"}),
        (ks.UpRead(sem), {}),
        (ks.UpWrite(sem), {}),
        (ks.DowngradeWrite(sem), {}),
        (ks.IrqDisable(), {("irq", 1): "w"}),
        (ks.IrqEnable(), {}),
        (ks.RcuReadLock(), {("rcur", 1): "w"}),
        (ks.RcuReadUnlock(), {("rcur", 1): "w"}),
        (ks.Load(0x1000, 8, "x"), {}),
        (ks.Store(0x1000, 8, 0, "x"), {}),
        (ks.TlbRemoveTableSyncOne(), {("irq", 0): "r", ("irq", 2): "r"}),
        (ks.TlbFlushRange(0, 4096), {("irq", 0): "r", ("irq", 2): "r", ("tlb", 0): "w",
                                     ("tlb", 1): "w", ("tlb", 2): "w"}),
        (ks.CallRcu(lambda: None, "cb"), {("rcu",): "w", ("kpy",): "w"}),
    ]
    for op, want in cases:
        rec = recorder()
        rec.on_kernel_step(1, op)
        assert rec.fp == want, op


def test_physical_accesses_touch_words_frames_and_the_allocator():
    rec = recorder()
    rec.log = [("r", 0x1000, 8)]
    fp: dict = {}
    rec._memory(fp)
    assert fp == {("e", 0x200): "r", ("f", 1): "r"}
    rec.log = [("w", 0x1FFC, 8)]  # two words, two frames
    fp = {}
    rec._memory(fp)
    assert fp == {("e", 0x3FF): "w", ("e", 0x400): "w", ("f", 1): "r", ("f", 2): "r",
                  ("fw", 1): "c", ("fw", 2): "c"}
    rec.log = [("r", 0x3000, 4096), ("w", 0x5000, 65)]  # large: whole frames
    fp = {}
    rec._memory(fp)
    assert fp == {("f", 3): "r", ("fw", 3): "r", ("f", 5): "w"}
    rec.log = [("r", 0x2000, 64)]  # 64 bytes is still small: eight words
    fp = {}
    rec._memory(fp)
    assert fp == {**{("e", 0x400 + i): "r" for i in range(8)}, ("f", 2): "r"}
    rec.log = [("meta", 6, 0), ("alloc", 7, 2), ("free", 9, 1)]
    fp = {}
    rec._memory(fp)
    assert fp == {("f", 6): "r", ("f", 7): "w", ("fw", 7): "w", ("f", 8): "w", ("fw", 8): "w",
                  ("alloc",): "w", ("f", 9): "w", ("fw", 9): "w"}


def test_an_unknown_reduction_mode_is_refused():
    with pytest.raises(ValueError, match="unknown partial-order reduction mode"):
        FootprintRecorder("fast")
