-- Recovery plans and their runs (docs/plans.md). A plan is a tenant's ordered groups of VMs with
-- actions before and after each group; a run is the catalog's record of one execution, the authority
-- as failovers are: the run's job on the failover queue moves it step by step (cursor), each step's
-- row written before its side effect, and the host's reconciler re-creates the job when Redis lost it.

CREATE TABLE plans (
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  name text NOT NULL,
  -- The validated definition: {description, point, groups: [{name, vms, onFailure, before, after}]}.
  definition jsonb NOT NULL,
  -- Standard Webhooks secret (whsec_…) the plan's webhook actions are signed with; shown once at creation.
  webhook_secret text NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, name)
);

CREATE TABLE plan_runs (
  id text PRIMARY KEY,
  tenant text NOT NULL,
  plan text NOT NULL,
  mode text NOT NULL CHECK (mode IN ('test', 'planned', 'unplanned')),
  -- The plan as it was when the run was asked for, and the steps compiled from it.
  definition jsonb NOT NULL,
  steps jsonb NOT NULL,
  -- requested, running, waiting (a manual step), cancelling; ended: completed, failed, cancelled.
  state text NOT NULL,
  -- completed or cancelled: where the run is asked to go.
  goal text NOT NULL DEFAULT 'completed',
  -- The index of the next step to run (every step before it is done, failed or skipped).
  cursor integer NOT NULL DEFAULT 0,
  -- The failover host whose queue carries the run's job.
  host text NOT NULL,
  error text,
  requested_by text NOT NULL,
  requested_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  ended_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (tenant, plan) REFERENCES plans(tenant, name) ON DELETE CASCADE
);
CREATE INDEX plan_runs_plan ON plan_runs (tenant, plan, requested_at);
CREATE INDEX plan_runs_live ON plan_runs (host) WHERE ended_at IS NULL;

CREATE TABLE plan_run_steps (
  id bigserial PRIMARY KEY,
  run_id text NOT NULL REFERENCES plan_runs(id) ON DELETE CASCADE,
  -- The step's index in plan_runs.steps (null: a row of the run itself, e.g. cancel requested).
  step_index integer,
  step text NOT NULL,
  status text NOT NULL CHECK (status IN ('started', 'done', 'failed', 'skipped', 'waiting')),
  detail text,
  cause text,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plan_run_steps_run ON plan_run_steps (run_id, id);

-- Each VM of a run: its group, the point the run's cut chose for it, and its failover.
CREATE TABLE plan_run_vms (
  run_id text NOT NULL REFERENCES plan_runs(id) ON DELETE CASCADE,
  vm text NOT NULL,
  group_index integer NOT NULL,
  -- The failover id, reserved when the run is asked for (a planned run's shutdown command names it).
  failover_id text NOT NULL,
  final_cycle bigint,
  point_id bigint,
  cycle bigint,
  captured_at timestamptz,
  error text,
  PRIMARY KEY (run_id, vm)
);
CREATE INDEX failovers_plan_run ON failovers (plan_run_id) WHERE plan_run_id IS NOT NULL;
