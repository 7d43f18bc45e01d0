-- Failover: the VM's recorded hardware and NICs, failover hosts, failovers and every step of each.
-- The catalog is the authority for failovers: each transition is a row written before its side
-- effect; queue jobs only carry the work and are re-created from these rows when Redis loses them.
-- Room is left for what later work needs: a failover's fork point per disk (failback ships the blocks
-- written since), plan runs (plan_run_id), live-VM sources (vm_hardware.source).

CREATE TABLE vm_hardware (
  tenant text NOT NULL,
  vm text NOT NULL,
  firmware text NOT NULL DEFAULT 'bios' CHECK (firmware IN ('bios', 'uefi')),
  secure_boot boolean NOT NULL DEFAULT false,
  cpus integer NOT NULL DEFAULT 1 CHECK (cpus BETWEEN 1 AND 240),
  memory_mib integer NOT NULL DEFAULT 1024 CHECK (memory_mib BETWEEN 64 AND 4194304),
  guest_os text NOT NULL DEFAULT 'linux' CHECK (guest_os IN ('linux', 'windows', 'other')),
  -- Per disk id: its bus and boot order ({"disk": {"bus": "virtio", "order": 0}}).
  disks jsonb NOT NULL DEFAULT '{}',
  -- How readiness is judged after boot: [{"kind": "guest-agent"}], console patterns, TCP ports.
  ready_probes jsonb NOT NULL DEFAULT '[{"kind": "guest-agent"}]',
  -- Where the configuration came from: operator, agent (protect), a live-VM source.
  source text NOT NULL DEFAULT 'default',
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, vm),
  FOREIGN KEY (tenant, vm) REFERENCES vms(tenant, name) ON DELETE CASCADE
);

CREATE TABLE vm_nics (
  tenant text NOT NULL,
  vm text NOT NULL,
  mac text NOT NULL,
  position integer NOT NULL,
  model text NOT NULL DEFAULT 'virtio',
  -- The failover settings (production and test), validated before they are stored.
  settings jsonb NOT NULL,
  -- The addresses the agent last reported for this NIC (network mappings start from them).
  reported_addresses text[] NOT NULL DEFAULT '{}',
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, vm, mac),
  FOREIGN KEY (tenant, vm) REFERENCES vms(tenant, name) ON DELETE CASCADE
);

CREATE TABLE failover_hosts (
  name text PRIMARY KEY,
  cpus integer NOT NULL,
  memory_mib bigint NOT NULL,
  storage_bytes bigint NOT NULL,
  networks text[] NOT NULL DEFAULT '{}',
  pid integer,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE failovers (
  id text PRIMARY KEY,
  tenant text NOT NULL,
  vm text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('test', 'planned', 'unplanned')),
  -- Where the failover stands, and where it is asked to go (ready, stopped, committed, reverted):
  -- the failover job moves state toward goal one idempotent step at a time.
  state text NOT NULL,
  goal text NOT NULL,
  -- The point asked for: latest, latest-consistent or a point id; and the point used.
  point_request text NOT NULL,
  point_id bigint,
  cycle bigint,
  captured_at timestamptz,
  host text REFERENCES failover_hosts(name),
  -- The generation id the failed-over VM sees (vmgenid), new for every failover.
  vm_generation_id uuid NOT NULL,
  -- Per disk: the point's layer it forked from and its replica directory (failback reads them).
  fork jsonb NOT NULL DEFAULT '[]',
  -- The hardware and NICs used, frozen at the request.
  spec jsonb NOT NULL DEFAULT '{}',
  warnings jsonb NOT NULL DEFAULT '[]',
  -- The IP plan (intent) beside what the guest reported at ready (result), with every difference.
  network jsonb,
  error text,
  idempotency_key text,
  requested_by text NOT NULL,
  plan_run_id text,
  requested_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  ready_at timestamptz,
  ended_at timestamptz,
  expires_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (tenant, vm) REFERENCES vms(tenant, name) ON DELETE CASCADE
);
CREATE INDEX failovers_vm ON failovers (tenant, vm, requested_at);
CREATE INDEX failovers_active ON failovers (state) WHERE ended_at IS NULL;
CREATE UNIQUE INDEX failovers_idempotency ON failovers (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- At most one real (planned or unplanned) failover of a VM is live at a time.
CREATE UNIQUE INDEX failovers_one_real ON failovers (tenant, vm) WHERE kind <> 'test' AND ended_at IS NULL;

CREATE TABLE failover_steps (
  id bigserial PRIMARY KEY,
  failover_id text NOT NULL REFERENCES failovers(id) ON DELETE CASCADE,
  step text NOT NULL,
  status text NOT NULL CHECK (status IN ('started', 'done', 'failed', 'skipped')),
  detail text,
  cause text,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX failover_steps_failover ON failover_steps (failover_id, id);

CREATE TABLE failover_screenshots (
  failover_id text NOT NULL REFERENCES failovers(id) ON DELETE CASCADE,
  taken_at timestamptz NOT NULL DEFAULT now(),
  png bytea NOT NULL,
  PRIMARY KEY (failover_id, taken_at)
);
