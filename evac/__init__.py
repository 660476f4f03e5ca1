"""Sonae's evacuation engine: hazard-aware routes to suitable shelters, recomputed live.

Modules: :mod:`evac.graph` (osmnx loading, profiles), :mod:`evac.network` (CSR arrays, cache),
:mod:`evac.snapping` (edge grid: nearest road points, roads under a polygon), :mod:`evac.mapped` (arrays shared
through memory-mapped files),
:mod:`evac.shelters`, :mod:`evac.hazards`, :mod:`evac.engine` (multi-source search, atomic swap),
:mod:`evac.routes` (GeoJSON answers), :mod:`evac.guidance` (ja / en / ja-easy texts),
:mod:`evac.planning` (capacity-aware assignment), :mod:`evac.drilltown` (synthetic town as OSM XML).
"""
