-- Idempotency-Key on every mutation of the API (docs/api.md, Idempotency). One row per caller and
-- key: the request's fingerprint (SHA-256 of method, path and body) and the first answer (status,
-- content type, body), written in the transaction of the change, so a repeat finds either the whole
-- answer or nothing. Rows older than 24 hours are not honoured and are removed.
CREATE TABLE idempotency_keys (
  caller text NOT NULL,
  key text NOT NULL,
  fingerprint bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  status integer,
  content_type text,
  body text,
  PRIMARY KEY (caller, key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
