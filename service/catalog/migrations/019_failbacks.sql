-- Failback (docs/failback.md): a committed failover's VM comes home. One row per request; the
-- failback job on the failover's host moves `state` through its steps, each idempotent, so a killed
-- worker resumes at the state the row names. `steps` is the step log the report shows (each step's
-- start and end, seconds, detail); `report` gathers what the steps measured (bytes of the final
-- reverse cycle, the equality check, the adopted generation).
CREATE TABLE failbacks (
  id text PRIMARY KEY,
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  vm text NOT NULL,
  failover_id text NOT NULL REFERENCES failovers(id) ON DELETE CASCADE,
  host text,
  -- requested → stopping → final-cycle → confirming → starting → removing → adopting → resuming → done; failed
  state text NOT NULL CHECK (state IN ('requested', 'stopping', 'final-cycle', 'confirming', 'starting', 'removing', 'adopting', 'resuming', 'done', 'failed')),
  -- How long the guest is given to power off after system_powerdown before its vCPUs are stopped.
  shutdown_timeout_seconds integer NOT NULL CHECK (shutdown_timeout_seconds BETWEEN 0 AND 3600),
  steps jsonb NOT NULL DEFAULT '[]',
  report jsonb NOT NULL DEFAULT '{}',
  error text,
  requested_by text NOT NULL,
  requested_at timestamptz NOT NULL DEFAULT now(),
  ended_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- One failback of a failover at a time (a failed one may be asked again).
CREATE UNIQUE INDEX failbacks_one_live ON failbacks (failover_id) WHERE state NOT IN ('done', 'failed');
CREATE INDEX failbacks_live_by_host ON failbacks (host) WHERE ended_at IS NULL;
