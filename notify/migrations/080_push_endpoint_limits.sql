-- Bounds on anonymous push subscriptions (breakit6: 400 subscriptions to endpoints that never answer
-- delayed every later resident's alert by minutes). client_key is a keyed hash (HMAC-SHA256 under a key
-- derived from the VAPID private key, first 16 bytes) of the subscriber's client address (an IPv6 /64),
-- never the address itself: it counts subscriptions per client and cannot be reversed without the key.
-- endpoint_host is the endpoint URL's host, for the per-host bound. Existing rows count for nobody.
ALTER TABLE push_subscriptions ADD COLUMN IF NOT EXISTS client_key bytea;
ALTER TABLE push_subscriptions ADD COLUMN IF NOT EXISTS endpoint_host text;
CREATE INDEX IF NOT EXISTS push_subscriptions_client ON push_subscriptions (client_key) WHERE client_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS push_subscriptions_host ON push_subscriptions (endpoint_host) WHERE endpoint_host IS NOT NULL;
