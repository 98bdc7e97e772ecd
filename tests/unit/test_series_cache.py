"""The ingest path's cache of metric series ids is bounded: a long-lived server that has seen
many runs keeps only the most recently used ids (least recently used ones are dropped)."""

from __future__ import annotations

from backend.services.bulk_write import _SeriesIds


def test_the_series_id_cache_keeps_the_most_recently_used() -> None:
    cache = _SeriesIds(size=3)
    cache.put("r1", {"a": 1, "b": 2, "c": 3})
    assert cache.get("r1", {"a"}) == {"a": 1}  # "a" is now the most recently used
    cache.put("r2", {"x": 4})
    assert len(cache) == 3
    assert cache.get("r1", {"a", "b", "c"}) == {"a": 1, "c": 3}  # "b" was the least recently used
    cache.forget("r1")
    assert cache.get("r1", {"a", "c"}) == {} and cache.get("r2", {"x"}) == {"x": 4}
