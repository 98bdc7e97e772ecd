"""The shared pieces of the backend and the worker: Redis keys, run locks, starting a stored run."""

from __future__ import annotations

import threading

import pytest

from backend.core.keys import RedisKeys
from backend.core.registry import lock_count, run_lock
from rlhfkit.events import RunFailed, RunStarted, new_run_id
from rlhfkit.runner import execute_stored_run
from rlhfkit.sinks import MemorySink


def test_every_key_carries_the_prefix_and_stream_keys_parse_back() -> None:
    k = RedisKeys("tenant-a")
    assert k.stream("r1") == "tenant-a:run:r1:events"
    assert (k.heartbeat("r1"), k.finished("r1"), k.cancel("r1")) == (
        "tenant-a:run:r1:heartbeat", "tenant-a:run:r1:finished", "tenant-a:run:r1:cancel")
    assert (k.streams, k.announce, k.celery) == ("tenant-a:streams", "tenant-a:streams:new", "tenant-a:celery:")
    assert k.run_id_of_stream(k.stream("abc123").encode()) == "abc123"  # bytes, as redis-py returns keys
    assert k.run_id_of_stream(k.stream("abc123")) == "abc123"


@pytest.mark.parametrize("key", ["other:run:r1:events", "tenant-a:run:r1:heartbeat", "tenant-a:run::events"])
def test_a_key_that_is_not_one_of_our_streams_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="not an event stream key"):
        RedisKeys("tenant-a").run_id_of_stream(key)


def test_run_locks_do_not_outlive_their_users() -> None:
    before = lock_count()
    ids = [new_run_id() for _ in range(50)]
    for run_id in ids:
        with run_lock(run_id):
            assert lock_count() >= before + 1
    assert lock_count() == before


def test_run_lock_serialises_one_run() -> None:
    inside, overlaps = [0], [0]

    def work() -> None:
        for _ in range(200):
            with run_lock("same-run"):
                inside[0] += 1
                overlaps[0] = max(overlaps[0], inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 1


def test_run_ids_are_16_hex_digits_everywhere() -> None:
    run_id = new_run_id()
    assert len(run_id) == 16 and int(run_id, 16) >= 0


def test_a_stored_run_whose_config_no_longer_validates_fails_with_one_event(tmp_path: object) -> None:
    sink = MemorySink()
    status = execute_stored_run("r-bad", {"ppo": {"batch_size": 0}}, sinks=[sink], out_dir=str(tmp_path))
    assert status == "failed"
    assert [type(e) for e in sink.events] == [RunFailed]
    assert "batch_size" in sink.events[0].error and sink.events[0].run_id == "r-bad"


def test_a_stored_run_whose_components_cannot_be_built_reports_its_details_then_fails(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import rlhfkit.runner as runner

    def broken(config: object) -> None:
        raise RuntimeError("no such reward model")

    monkeypatch.setattr(runner, "build_components", broken)
    sink = MemorySink()
    status = execute_stored_run("r-build", {}, sinks=[sink], out_dir=str(tmp_path))
    assert status == "failed"
    assert [type(e) for e in sink.events] == [RunStarted, RunFailed]
    assert sink.events[1].error == "RuntimeError: no such reward model"
