"""sharding.sharded, the one way work is shared over helper processes (infer.py --devices, data_prep.py
--workers): every item's result comes back once, a worker's own error arrives as itself, and a worker that dies
is named rather than waited on. Real spawned processes: the pickling and the process ends are what is tested."""

import functools
import os

import pytest

from face_match_age.sharding import sharded

DIED = "a test worker process died (exit code {exit_code}); rerun alone to see its error"


def squares(rank: int, world: int, share: list):
    for item in share:
        yield rank, world, item * item


def fails_on(bad: int, rank: int, world: int, share: list):
    for item in share:
        if item == bad:
            raise LookupError(f"item {item} failed")
        yield item


def dies_on(bad: int, rank: int, world: int, share: list):
    for item in share:
        if item == bad:
            os._exit(3)
        yield item


def test_every_item_comes_back_once_from_the_worker_that_held_it():
    results = list(sharded(3, squares, list(range(10)), (), DIED))
    assert sorted(item for _, _, item in results) == [item * item for item in range(10)]
    assert {(rank, square) for rank, _, square in results} == {(item % 3, item * item) for item in range(10)}
    assert {world for _, world, _ in results} == {3}


def test_a_worker_error_of_a_passed_on_type_arrives_as_itself():
    with pytest.raises(LookupError, match="item 4 failed"):
        list(sharded(2, functools.partial(fails_on, 4), list(range(10)), (LookupError,), DIED))


def test_a_worker_that_dies_is_named_with_its_exit_code():
    with pytest.raises(RuntimeError, match=r"a test worker process died \(exit code 3\)"):
        list(sharded(2, functools.partial(dies_on, 5), list(range(10)), (), DIED))
