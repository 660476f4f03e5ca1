"""Sonae as NGSI-LD: Smart Data Models entities (:mod:`ngsi.entities`), Sonae's @context
(:mod:`ngsi.context`), the query subset (:mod:`ngsi.query`), reading (:mod:`ngsi.store`) and the optional push to
a context broker (:mod:`ngsi.push`). Domain layer: used by ``api`` and the push worker; never imports ``api``."""
