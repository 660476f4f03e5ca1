"""Notifications: Web Push to residents, signed webhooks to partner systems, email to on-call staff.

One durable queue in PostgreSQL (``notify_queue``) is filled from alert events and drained by the
delivery workers (:mod:`notify.worker`); its HTTP endpoints are in :mod:`api.notifications` (this
package serves no HTTP).

Each message is rendered when its event is fanned out, from the alert as it was at that event
(:func:`alerting.store.alert_at_event`), and a target gets an alert's events in their order
(:func:`notify.worker._claim`): a backlog is told change by change, as it happened.
"""
