"""The field store's metrics (api/evacmetrics.py): stores driven through real operations on a real
directory (two stores on one directory stand for two processes of a host), and the exported samples
compared with a recount of what the operations returned and left on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.evacmetrics import COUNTERS, FIELD_STORES, FieldStoreStats
from evac.coldfields import ColdFieldBudget
from evac.engine import Engine
from evac.fieldstore import RETRY_MIN_S, FieldStore
from evac.gridtown import grid_network, grid_shelters
from evac.network import RoadNetwork


def _exported(registry: CollectorRegistry) -> dict[str, float]:
    """``{sample name: value}`` of the field store's families, read from the text exposition."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name.startswith("sonae_evac_field_store_"):
                out[s.name] = s.value
    return out


def test_exported_counts_equal_a_recount_of_the_operations(tmp_path: Path) -> None:
    stats = FieldStoreStats()
    registry = CollectorRegistry()
    registry.register(stats)
    a = FieldStore(tmp_path, "net", keep=2)  # "process A"
    b = FieldStore(tmp_path, "net", keep=2, wait_s=0.02)  # "process B", which waits little
    stats.watch(a)
    stats.watch(b)
    stats.watch(a)  # once only
    arrays = {"dist": np.arange(500.0), "source": np.arange(500, dtype=np.int32)}
    recount = dict.fromkeys(("mapped", "published", "waits", "wait_timeouts", "write_failures", "skipped",
                             "damaged", "pruned"), 0)

    # A computes five states of one field and publishes each; B maps the ones still there
    put = []
    for k in range(5):
        claim = a.claim("f", f"d{k}")
        assert claim.held and claim.arrays is None
        a.put("f", f"d{k}", arrays)
        claim.release()
        put.append(f"d{k}")
        recount["published"] += 1
    for dig in put:
        if b.claim("f", dig).arrays is not None:
            recount["mapped"] += 1
    a.prune()  # A bounds what it published: keep=2 of the five
    recount["pruned"] += len(put) - len(a.entries("f"))
    assert recount["pruned"] == 3

    # A holds an entry's lock and never publishes: B waits, gives up, computes it itself
    held = a.claim("g", "x")
    late = b.claim("g", "x")
    assert late.arrays is None and not late.held
    recount["waits"] += 1
    recount["wait_timeouts"] += 1
    held.release()

    # an entry cut short is found by B, removed and counted as damaged
    a.put("g", "y", arrays)
    recount["published"] += 1
    npy = tmp_path / "g" / "y" / "dist.npy"
    npy.write_bytes(npy.read_bytes()[:-64])
    assert b.get("g", "y") is None and not (tmp_path / "g" / "y").exists()
    recount["damaged"] += 1

    # a third store whose directory cannot be made: one failed write, then puts skipped while paused
    (tmp_path / "file").write_text("")
    now = [0.0]
    c = FieldStore(tmp_path / "file" / "fields", "net", clock=lambda: now[0])
    stats.watch(c)
    for _ in range(3):
        assert c.put("h", "z", arrays) is arrays  # kept private
    recount["write_failures"] += 1
    recount["skipped"] += 2
    now[0] += RETRY_MIN_S
    c.put("h", "z", arrays)  # tried again after the pause: fails again
    recount["write_failures"] += 1

    got = _exported(registry)
    assert got == {f"sonae_evac_field_store_{k}_total": float(n) for k, n in recount.items()}
    # the names the module documents, each a counter of the stores' attribute it names
    assert {f"{name}_total" for name, _, _ in COUNTERS} == set(got)
    for name, _, attr in COUNTERS:
        assert got[f"{name}_total"] == sum(getattr(s, attr) for s in (a, b, c))


def test_the_api_exports_the_store_of_each_followed_service_engine(tmp_path: Path) -> None:
    """The process's collector (in the default registry) finds an engine's store through its service, also
    when the engine comes after :meth:`FieldStoreStats.follow`, and keeps counting it after the service."""
    npz = tmp_path / "grid.npz"
    grid_network(1500, seed=5).save(npz)

    class _Service:  # what the collector reads of an EvacService: its engine and its cold-field budget
        engine: Engine | None = None
        cold = ColdFieldBudget(per_client_per_minute=1, per_minute=1, waiting=0)

    service = _Service()
    registry = CollectorRegistry()
    registry.register(FIELD_STORES)
    before = _exported(registry)
    FIELD_STORES.follow(service)  # type: ignore[arg-type]
    assert _exported(registry) == before  # no engine yet
    net = RoadNetwork.load(npz)
    service.engine = Engine(net, field_store_min_nodes=0, shelters=grid_shelters(net, per=100, seed=5))
    service.engine.field()
    store = service.engine.store
    assert store is not None
    published = sum(len(store.entries(folder.name)) for folder in store.root.iterdir())  # entries on disk
    assert published == 2  # the field and its edge factors ("mult")
    after = _exported(registry)
    assert after["sonae_evac_field_store_published_total"] - before["sonae_evac_field_store_published_total"] \
        == published
    del service
    assert _exported(registry) == after  # the counts stay in the sums: a counter never goes down


def test_a_followed_services_budget_is_let_go_when_the_service_is_and_its_counts_stay_in_the_sums() -> None:
    """Found: the collector held every followed service's cold-field budget to the end of the process (so that
    its counts stayed in the sums): with many applications in one process (tests, reloads) that list grew
    without bound. A budget gone is folded into a running total and let go: the counter never goes down."""
    import gc
    import weakref

    class _Service:
        engine: Engine | None = None

        def __init__(self) -> None:
            self.cold = ColdFieldBudget(per_client_per_minute=1, per_minute=1, waiting=0)

    stats = FieldStoreStats()
    registry = CollectorRegistry()
    registry.register(stats)

    def cold() -> dict[str, float]:
        return {s.labels["outcome"]: s.value for family in text_string_to_metric_families(
            generate_latest(registry).decode()) for s in family.samples
            if s.name == "sonae_evac_cold_fields_total"}

    refs = []
    for i in range(50):
        service = _Service()
        stats.follow(service)  # type: ignore[arg-type]
        stats.follow(service)  # type: ignore[arg-type]  # once only
        service.cold.counts["computed"] += 1
        service.cold.counts["shared"] += i % 2
        refs.append(weakref.ref(service.cold))
        if i == 10:
            assert cold()["computed"] == 11  # a live budget is counted as it is now
        del service
    gc.collect()
    assert all(r() is None for r in refs)  # nothing held for the budgets of services gone
    assert cold() == {"computed": 50.0, "shared": 25.0, "refused_client": 0.0, "refused_busy": 0.0}
    live = _Service()
    stats.follow(live)  # type: ignore[arg-type]
    live.cold.counts["refused_busy"] += 2
    assert cold() == {"computed": 50.0, "shared": 25.0, "refused_client": 0.0, "refused_busy": 2.0}
