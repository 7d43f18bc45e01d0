-- API keys (docs/api.md, API keys) and the audit log (docs/api.md, Audit).
-- An API key: `lbk_<id>_<secret>`; only the SHA-256 of the secret is kept. Tenant roles name their
-- tenant, hoster roles none. Revoked and expired keys stay listed until their tenant goes.
CREATE TABLE api_keys (
  id text PRIMARY KEY,
  name text NOT NULL,
  role text NOT NULL CHECK (role IN ('hoster-admin', 'hoster-operator', 'tenant-admin', 'tenant-operator', 'tenant-viewer')),
  tenant text REFERENCES tenants(name) ON DELETE CASCADE,
  secret_sha256 bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL,
  expires_at timestamptz,
  revoked_at timestamptz,
  revoked_by text,
  last_used_at timestamptz,
  CHECK ((role LIKE 'tenant-%') = (tenant IS NOT NULL))
);

CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);

-- One row per mutation through the API, written in the transaction of the change (result ok), or
-- after it failed (result: the error's code). No foreign keys: a row outlives what it names.
CREATE TABLE audit_log (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  actor text NOT NULL,
  actor_key text,
  actor_role text NOT NULL,
  actor_tenant text,
  tenant text,
  action text NOT NULL,
  target text NOT NULL,
  source text,
  request_id text,
  result text NOT NULL
);

CREATE INDEX audit_log_tenant ON audit_log (tenant, id);

CREATE INDEX audit_log_actor ON audit_log (actor, id);

-- Append-only: no statement may change or remove audit rows (no route does; this holds for SQL too).
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit_log rows cannot be changed or removed'; END $$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
