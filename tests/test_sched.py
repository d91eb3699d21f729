from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.sched import RCU_TASK, Replay, ReplayDivergence, ScheduleError, decode, encode

tasks = st.sampled_from([0, 1, 2, 3, RCU_TASK])


@given(st.lists(tasks, max_size=300))
def test_schedule_string_roundtrip(choices):
    text = encode(choices)
    assert text.startswith("pt1:")
    assert decode(text) == choices


def test_schedule_string_is_compact():
    assert encode([0] * 12 + [1] * 3 + [0]) == "pt1:a12b3a"


@pytest.mark.parametrize("bad", ["a3", "pt1:A3", "pt1:a0", "pt1:q2", "pt1:a3-"])
def test_bad_schedule_strings_are_refused(bad):
    with pytest.raises(ScheduleError):
        decode(bad)


def test_replay_names_the_divergence():
    r = Replay([0, 1])
    assert r.choose([0, 1], 0) == 0
    with pytest.raises(ReplayDivergence, match="wants cpu1"):
        r.choose([0], 1)


def test_every_cpu_letter_and_the_rcu_task_decode():
    # a..p are the 16 CPUs, z is the RCU callback task; q..y name nothing
    assert decode("pt1:a2p3z") == [0, 0, 15, 15, 15, 25]
