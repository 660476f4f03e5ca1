"""Prometheus metrics of the ingest pipeline."""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter("sonae_ingest_messages_received_total", "MQTT messages received")
MESSAGES_ACKED = Counter("sonae_ingest_messages_acked_total", "MQTT messages acknowledged after commit")
ROWS_WRITTEN = Counter("sonae_ingest_rows_written_total", "Readings inserted")
DUPLICATES = Counter("sonae_ingest_duplicates_total", "Readings skipped as already stored")
QUARANTINED = Counter("sonae_ingest_quarantined_total", "Readings of unknown stations held in quarantine")
DEAD_LETTERS = Counter("sonae_ingest_dead_letters_total", "Messages kept as dead letters", ["reason"])
DB_ERRORS = Counter("sonae_ingest_db_errors_total", "Failed batch writes (retried)")
INFLIGHT = Gauge("sonae_ingest_unacked_messages", "Messages received but not yet acknowledged")
INFLIGHT_PEAK = Gauge("sonae_ingest_unacked_messages_max",
                      "Most messages held unacknowledged at once since start (bounded by ingest.max_inflight)")
INBOX = Gauge("sonae_ingest_inbox_messages", "Messages received and waiting to be parsed")
MQTT_CONNECTIONS = Gauge("sonae_ingest_mqtt_connections",
                         "Connections (CONNACKs) since start: 1 when the connection never dropped")
REDELIVERIES_DROPPED = Gauge("sonae_ingest_redeliveries_dropped",
                             "Broker redeliveries of messages still held, not queued a second time (since start)")
BATCH_SIZE = Histogram("sonae_ingest_batch_messages", "Messages per committed batch",
                       buckets=(1, 5, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000))
COMMIT_SECONDS = Histogram("sonae_ingest_commit_seconds", "Time to write and commit one batch",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LAG_SECONDS = Histogram("sonae_ingest_lag_seconds", "Reading time to commit time",
                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400))
LAST_COMMIT = Gauge("sonae_ingest_last_commit_timestamp_seconds", "Unix time of the last committed batch")
