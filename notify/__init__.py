"""Notifications: Web Push to residents, signed webhooks to partner systems, email to on-call staff.

One durable queue in PostgreSQL (``notify_queue``) is filled from alert events and drained by the
delivery workers (:mod:`notify.worker`); its HTTP endpoints are in :mod:`api.notifications` (this
package serves no HTTP).
"""
