"""Prometheus metrics of the evacuation field store (:mod:`evac.fieldstore`), read from its plain counters.

``evac`` is a domain package and does not know Prometheus (pyproject.toml [tool.importlinter]); its
:class:`~evac.fieldstore.FieldStore` counts in integer attributes, and :class:`FieldStoreStats` (a
collector, like :class:`api.edge.RequestStats`) exports their sums over every store this process has
used when scraped. Counters, per process (a store is per engine: one per process in production):

* ``sonae_evac_field_store_mapped_total``: entries mapped from the store and checked (``hits``);
* ``sonae_evac_field_store_published_total``: entries this process published (``writes``);
* ``sonae_evac_field_store_waits_total``: claims that waited for another process computing the entry;
* ``sonae_evac_field_store_wait_timeouts_total``: of those, the ones that computed the entry here after
  the wait timed out (``wait_timeouts``);
* ``sonae_evac_field_store_write_failures_total``: failed writes (publishing pauses after one);
* ``sonae_evac_field_store_skipped_total``: results kept private while publishing was paused;
* ``sonae_evac_field_store_damaged_total``: damaged entries found and removed;
* ``sonae_evac_field_store_pruned_total``: entries removed to bound the store (``pruned``).

and, from the services' cold-field budgets (:class:`evac.coldfields.ColdFieldBudget` ``counts``):

* ``sonae_evac_cold_fields_total{outcome}``: route fields asked for that were neither configured nor
  computed, by outcome: ``computed`` (a computation started), ``shared`` (joined one in flight),
  ``refused_client`` (the client's budget used up: 429), ``refused_busy`` (the process's: 503).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import Counter, deque
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from evac.coldfields import OUTCOMES, ColdFieldBudget
from evac.fieldstore import FieldStore
from evac.service import EvacService

#: (metric name without ``_total``, help, the FieldStore counter it sums)
COUNTERS = (
    ("sonae_evac_field_store_mapped", "Field store entries mapped and checked (computed by another process, "
                                      "or earlier by this one)", "hits"),
    ("sonae_evac_field_store_published", "Field store entries this process computed and published", "writes"),
    ("sonae_evac_field_store_waits", "Field store claims that waited for another process computing the entry",
     "waits"),
    ("sonae_evac_field_store_wait_timeouts", "Field store waits that timed out: the entry computed here too",
     "wait_timeouts"),
    ("sonae_evac_field_store_write_failures", "Field store writes that failed (publishing pauses)",
     "write_failures"),
    ("sonae_evac_field_store_skipped", "Field store results kept private while publishing was paused", "skipped"),
    ("sonae_evac_field_store_damaged", "Damaged field store entries found and removed", "damaged"),
    ("sonae_evac_field_store_pruned", "Field store entries removed to bound the store", "pruned"),
)


class FieldStoreStats(Collector):
    """The sums of the counters of the field stores this process used, as Prometheus counters.

    Stores come from :meth:`watch` or from the engines of the services given to :meth:`follow` (held
    weakly: looked up at each scrape, so an engine loaded after start-up is found). A store once seen is
    held to the end of the process, so that its counts never leave the sums (a counter must not go down);
    a store is a few hundred bytes (its arrays are the engine's), and a process has one per engine it built.

    A service's cold-field budget is not held: its ``counts`` are (a small Counter), until the budget is
    gone; then they are folded into a running total and let go (found: every budget was held to the end of
    the process, a list growing with each application built in it, as in tests and reloads). The budget's
    finalizer only queues its key (it may run inside a garbage collection, even in the middle of a scrape);
    the next :meth:`follow` or scrape folds it, so a count is in the sums exactly once at every moment.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: weakref.WeakSet[EvacService] = weakref.WeakSet()
        self._stores: list[FieldStore] = []
        self._budget_keys: weakref.WeakKeyDictionary[ColdFieldBudget, int] = weakref.WeakKeyDictionary()
        self._budget_counts: dict[int, Counter[str]] = {}  # key: the counts of a budget followed (live or gone)
        self._budgets_gone: deque[int] = deque()  # keys of budgets gone, not yet folded (appended by finalizers)
        self._cold_retired: Counter[str] = Counter()  # the counts of budgets gone, folded
        self._next_key = itertools.count()

    def watch(self, store: FieldStore) -> None:
        """Count ``store`` in the sums from now on (once, however often it is given)."""
        with self._lock:
            if not any(s is store for s in self._stores):
                self._stores.append(store)

    def follow(self, service: EvacService) -> None:
        """Count the field store of ``service``'s engine, whenever it has one, and its cold-field budget."""
        budget = service.cold
        with self._lock:
            self._services.add(service)
            self._fold_gone_budgets()
            if budget not in self._budget_keys:
                key = next(self._next_key)
                self._budget_keys[budget] = key
                self._budget_counts[key] = budget.counts
                weakref.finalize(budget, self._budgets_gone.append, key).atexit = False

    def _fold_gone_budgets(self) -> None:
        """Fold the counts of the budgets gone into the running total (with the lock held)."""
        while self._budgets_gone:
            counts = self._budget_counts.pop(self._budgets_gone.popleft(), None)
            if counts is not None:
                self._cold_retired.update(counts)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            services = list(self._services)
            self._fold_gone_budgets()
            cold_sums = Counter(self._cold_retired)
            for counts in self._budget_counts.values():
                cold_sums.update(counts)
        for service in services:
            engine = service.engine
            if engine is not None and engine.store is not None:
                self.watch(engine.store)
        with self._lock:
            stores = list(self._stores)
        for name, text, attr in COUNTERS:
            family = CounterMetricFamily(name, text)
            family.add_metric([], sum(getattr(s, attr) for s in stores))
            yield family
        cold = CounterMetricFamily("sonae_evac_cold_fields", "Route fields asked for that were neither configured "
                                   "(evac.warm) nor computed, by outcome", labels=["outcome"])
        for outcome in OUTCOMES:
            cold.add_metric([outcome], cold_sums[outcome])
        yield cold


#: the one collector of this process (registered once, whatever number of applications it builds)
FIELD_STORES = FieldStoreStats()
REGISTRY.register(FIELD_STORES)
