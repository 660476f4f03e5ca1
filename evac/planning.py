"""Capacity-aware evacuation planning for staff.

Given people per place and the qualifying shelters of the current hazard state, find how many people
of each place go to which shelter so that no shelter receives more than its free capacity and the total
person-seconds of travel is least. This is a transportation problem (min-cost flow on the bipartite
graph place -> shelter, whose arc costs are shortest travel times over the blocked/penalised road graph).
It is solved exactly as a linear program with HiGHS (``scipy.optimize.linprog``); the constraint matrix is
totally unimodular, so the optimal vertex solution HiGHS returns is integral (we round and check).

People who cannot be placed (total free capacity too small) go to an explicit *overflow* sink with a
large cost, so the plan always exists and says how many are left over. Shelters with unknown capacity
take anybody unless ``unknown_capacity`` gives a number, and the plan warns about them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from evac.engine import UNREACHABLE_S, Engine

#: Cost per person sent to the overflow sink: above any real travel time, so capacity is used first.
OVERFLOW_COST_S = 1e7


@dataclass(frozen=True)
class Plan:
    """An evacuation plan; ``flows`` lists (place index, shelter id, people, seconds per person)."""

    flows: list[tuple[int, str, int, float]]
    arrivals: dict[str, int]
    capacity_left: dict[str, int | None]
    overflow_people: int
    unreachable_people: int
    inside_hazard_people: int
    total_person_seconds: float
    hazard_version: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flows": [{"place": p, "shelter_id": s, "people": n, "duration_s": round(t, 1)} for p, s, n, t in self.flows],
            "arrivals": self.arrivals, "capacity_left": self.capacity_left, "overflow_people": self.overflow_people,
            "unreachable_people": self.unreachable_people, "inside_hazard_people": self.inside_hazard_people,
            "total_person_seconds": round(self.total_person_seconds, 1), "hazard_version": self.hazard_version,
            "warnings": self.warnings,
        }


def plan_evacuation(
    engine: Engine, places: Iterable[tuple[float, float, int]], *, profile: str = "walk", hazard: str = "flood",
    exercise: bool = False, unknown_capacity: int | None = None,
) -> Plan:
    """Assign people to shelters at least total travel time within free capacities.

    Parameters
    ----------
    places
        ``(lat, lon, people)`` per area (its centroid) or per building; each walks from its nearest safe
        road point, as a resident's route does (:meth:`evac.engine.Engine.route_result`).
    unknown_capacity
        Capacity assumed for shelters whose capacity is unknown; ``None`` = unlimited.
    """
    f = engine.field(profile, hazard, exercise)
    pl = list(places)
    people = np.array([int(p[2]) for p in pl], np.int64)
    if (people < 0).any():
        raise ValueError("people per place must not be negative")
    warnings: list[str] = []
    # people are assigned by capacity across shelters: a place at a shelter walks from its road like any other
    answers = [engine.route_result(float(p[0]), float(p[1]), profile=profile, hazard=hazard, exercise=exercise,
                                   at_shelter=False) for p in pl]
    f = answers[0].field if answers else f
    inside = np.array([r.status == "inside_hazard" for r in answers], bool)
    reachable = np.array([r.status == "ok" for r in answers], bool) & (people > 0)
    unreachable = int(people[~inside & ~reachable].sum())
    if unreachable:
        warnings.append(f"{unreachable} people have no safe route to any qualifying shelter")
    if inside.any():
        warnings.append(f"{int(people[inside].sum())} people are inside a blocked hazard area: vertical evacuation")
    # every qualifying shelter is its own destination, even when several share a road point
    shelters = list(f.shelters)
    caps = []
    for s in shelters:
        cap = s.capacity if s.capacity is not None else unknown_capacity
        caps.append(np.inf if cap is None else max(0, cap - s.occupancy))
    if any(s.capacity is None for s in shelters):
        unknown = [s.id for s in shelters if s.capacity is None]
        warnings.append(f"{len(unknown)} shelters have unknown capacity (treated as "
                        f"{'unlimited' if unknown_capacity is None else unknown_capacity}): {', '.join(unknown[:10])}")
    idx = np.flatnonzero(reachable)
    # travel time place -> shelter: one search per shelter from its own source rows on the reversed graph
    n = engine.network.n_nodes
    src = f.sources
    cost = np.full((len(shelters), len(idx)), np.inf)
    if len(idx) and shelters:
        graph = engine.source_graph(f)
        starts = [engine.starts(answers[i]) for i in idx.tolist()]
        for j in range(len(shelters)):
            rows = np.flatnonzero(src.shelter == j)
            d = (dijkstra(graph, directed=True, indices=n + rows, min_only=True, limit=UNREACHABLE_S)
                 if len(rows) else np.full(n, np.inf))
            for col, (ends, direct) in enumerate(starts):
                best = min((off + d[node] for node, off in ends), default=np.inf)
                for sj, tot in direct:
                    if sj == j:
                        best = min(best, tot)
                cost[j, col] = best if best < UNREACHABLE_S else np.inf
    si, pj = np.nonzero(np.isfinite(cost))
    n_arcs = len(si)
    n_p = len(idx)
    c = np.concatenate([cost[si, pj], np.full(n_p, OVERFLOW_COST_S)])
    var_place = np.concatenate([pj, np.arange(n_p)])
    a_eq = coo_matrix((np.ones(n_arcs + n_p), (var_place, np.arange(n_arcs + n_p))), shape=(n_p, n_arcs + n_p))
    finite = [i for i, cp in enumerate(caps) if np.isfinite(cp)]
    row_of = {s: r for r, s in enumerate(finite)}
    arc_rows = [(row_of[int(si_k)], k) for k, si_k in enumerate(si.tolist()) if int(si_k) in row_of]
    a_ub = coo_matrix((np.ones(len(arc_rows)), ([r for r, _ in arc_rows], [k for _, k in arc_rows])),
                      shape=(len(finite), n_arcs + n_p))
    flows: list[tuple[int, str, int, float]] = []
    arrivals = {s.id: 0 for s in shelters}
    overflow = 0
    total = 0.0
    if n_p:
        res = linprog(c, A_ub=a_ub.tocsr() if finite else None, b_ub=np.array([caps[s] for s in finite]) if finite else None,
                      A_eq=a_eq.tocsr(), b_eq=people[idx].astype(float), bounds=(0, None), method="highs")
        if res.status != 0:
            raise RuntimeError(f"the planning LP failed ({res.message}); report this with the input sizes")
        x = np.rint(res.x).astype(np.int64)
        for k in np.flatnonzero(x[:n_arcs]).tolist():
            si_k, pj_k = int(si[k]), int(pj[k])
            flows.append((int(idx[pj_k]), shelters[si_k].id, int(x[k]), float(cost[si_k, pj_k])))
            arrivals[shelters[si_k].id] += int(x[k])
            total += float(cost[si_k, pj_k]) * int(x[k])
        overflow = int(x[n_arcs:].sum())
    left: dict[str, int | None] = {}
    for s, cp in zip(shelters, caps, strict=True):
        left[s.id] = None if not np.isfinite(cp) else int(cp) - arrivals[s.id]
        if np.isfinite(cp) and arrivals[s.id] >= cp and arrivals[s.id] > 0:
            warnings.append(f"shelter {s.id} ({s.name}) will be full: {arrivals[s.id]} arrivals for {int(cp)} places")
    if overflow:
        warnings.append(f"{overflow} people exceed the free capacity of all reachable shelters: open more shelters")
    return Plan(flows, arrivals, left, overflow, unreachable, int(people[inside].sum()), total,
                f.version, warnings)


def places_from_nodes(engine: Engine, people_per_node: Mapping[int, int]) -> list[tuple[float, float, int]]:
    """``(lat, lon, people)`` for people counted per network node index."""
    net = engine.network
    return [(float(net.node_lat[n]), float(net.node_lon[n]), int(p)) for n, p in people_per_node.items()]
