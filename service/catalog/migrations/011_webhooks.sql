-- Events and signed webhooks (docs/webhooks.md). An event is written to the catalog in the
-- transaction of the change it reports, together with one delivery per matching subscription (the
-- outbox): a delivery waits here until a queue job carries it, so nothing is lost while Redis is down.

-- What happened: a type from the catalogue, the tenant it concerns (null: hoster-wide), its data.
CREATE TABLE events (
  id text PRIMARY KEY,
  type text NOT NULL,
  tenant text,
  data jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_tenant_time ON events (tenant, created_at);

-- Where events go: a tenant's subscription sees its tenant's events, a hoster-wide one (tenant null)
-- every event. types: the event types wanted, or '*' for all but the opt-in ones (point.created).
-- The secret (whsec_…) is kept sealed under a key derived from the master key.
CREATE TABLE webhook_subscriptions (
  id text PRIMARY KEY,
  tenant text REFERENCES tenants(name) ON DELETE CASCADE,
  url text NOT NULL,
  description text NOT NULL DEFAULT '',
  types text[] NOT NULL,
  secret_sealed text NOT NULL,
  enabled boolean NOT NULL DEFAULT true,
  disabled_reason text,
  -- The first failed attempt since the last success: a subscription failing for a day is disabled.
  failing_since timestamptz,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_subscriptions_tenant ON webhook_subscriptions (tenant);

-- One event to one subscription. id is the webhook-id every attempt carries (the receiver's
-- idempotency key). attempts: made so far; run_start: attempts before the latest redelivery (the
-- retry schedule restarts there). queued_attempt: the attempt a queue job was made for (the outbox
-- sweep makes one when it differs from attempts). claimed_until: a worker is sending it.
CREATE TABLE webhook_deliveries (
  id text PRIMARY KEY,
  subscription_id text NOT NULL REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
  event_id text NOT NULL REFERENCES events(id) ON DELETE CASCADE,
  tenant text,
  status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  run_start integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL,
  queued_attempt integer,
  claimed_until timestamptz,
  last_status integer,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  ended_at timestamptz
);

CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE INDEX webhook_deliveries_subscription ON webhook_deliveries (subscription_id, created_at);

-- Every attempt: when, how long, what came back (status, or why none) and the start of the answer.
CREATE TABLE webhook_attempts (
  delivery_id text NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
  attempt integer NOT NULL,
  started_at timestamptz NOT NULL,
  latency_ms integer NOT NULL,
  ok boolean NOT NULL,
  status integer,
  error text,
  response_excerpt text NOT NULL DEFAULT '',
  PRIMARY KEY (delivery_id, attempt)
);

-- What the event monitors last saw (a VM's health, a disk's resync, a certificate's warning), so a
-- change is reported once.
CREATE TABLE event_watches (
  key text PRIMARY KEY,
  value text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
