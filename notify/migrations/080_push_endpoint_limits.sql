-- Bounds on anonymous push subscriptions (breakit6: 400 subscriptions to endpoints that never answer
-- delayed every later resident's alert by minutes). client_key is a keyed hash (HMAC-SHA256 under a key
-- derived from the VAPID private key, first 16 bytes) of the subscriber's client address (an IPv6 /64),
-- never the address itself: it counts subscriptions per client and cannot be reversed without the key.
-- endpoint_host is the endpoint URL's host, for the per-host bound. Existing rows count for nobody.
ALTER TABLE push_subscriptions ADD COLUMN IF NOT EXISTS client_key bytea;
ALTER TABLE push_subscriptions ADD COLUMN IF NOT EXISTS endpoint_host text;
CREATE INDEX IF NOT EXISTS push_subscriptions_client ON push_subscriptions (client_key) WHERE client_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS push_subscriptions_host ON push_subscriptions (endpoint_host) WHERE endpoint_host IS NOT NULL;

-- The host each queued message goes to (notify.store.QUEUE_HOST: the URL's authority; 'smtp' for email), so
-- that the worker can take due messages in turns across hosts (notify.worker._claim) with an index, and one
-- host's backlog does not hold back another's. Messages queued before this get theirs here.
ALTER TABLE notify_queue ADD COLUMN IF NOT EXISTS host text NOT NULL DEFAULT '';
UPDATE notify_queue q SET host = lower(coalesce(substring(s.endpoint from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]*)'), ''))
    FROM push_subscriptions s WHERE q.kind = 'push' AND s.id = q.target_id AND q.state = 'queued' AND q.host = '';
UPDATE notify_queue q SET host = lower(coalesce(substring(w.url from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]*)'), ''))
    FROM webhooks w WHERE q.kind = 'webhook' AND w.id = q.target_id AND q.state = 'queued' AND q.host = '';
UPDATE notify_queue SET host = 'smtp' WHERE kind = 'email' AND state = 'queued' AND host = '';
CREATE INDEX IF NOT EXISTS notify_queue_host_due ON notify_queue (host, next_attempt_at, id) WHERE state = 'queued';
