-- The catalog's first shape: tenants and their trust, VMs and disks, committed logs, recovery points.
-- The applied state written beside each replica is the authority; these rows follow it.

CREATE TABLE tenants (
  name text PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now(),
  replica_public_jwk jsonb NOT NULL,
  replica_private_wrapped text NOT NULL
);

CREATE TABLE authorizations (
  id bigserial PRIMARY KEY,
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  pattern text NOT NULL,
  storage text NOT NULL,
  trust_group text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant, pattern)
);

CREATE TABLE servers (
  serial text PRIMARY KEY,
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  fqdn text NOT NULL,
  not_before timestamptz NOT NULL,
  not_after timestamptz NOT NULL,
  issued_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz
);
CREATE INDEX servers_tenant_fqdn ON servers (tenant, fqdn);

CREATE TABLE enrollment_tokens_used (
  jti text PRIMARY KEY,
  tenant text NOT NULL,
  server_fqdn text NOT NULL,
  used_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vms (
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  name text NOT NULL,
  display_name text,
  server_fqdn text NOT NULL,
  authorization_id bigint NOT NULL REFERENCES authorizations(id),
  trust_group text NOT NULL,
  storage_dir text NOT NULL,
  frequency_seconds integer NOT NULL,
  history integer NOT NULL,
  app_consistent_every integer NOT NULL,
  compression text NOT NULL,
  protected boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, name)
);

CREATE TABLE disks (
  tenant text NOT NULL,
  vm text NOT NULL,
  id text NOT NULL,
  virtual_size bigint NOT NULL,
  source_format text NOT NULL,
  replica_dir text NOT NULL,
  generation bigint NOT NULL DEFAULT 0,
  base_complete boolean NOT NULL DEFAULT false,
  applied_sequence bigint NOT NULL DEFAULT 0,
  state text NOT NULL DEFAULT 'initial_required',
  resync_reason text,
  last_applied_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, vm, id),
  FOREIGN KEY (tenant, vm) REFERENCES vms(tenant, name) ON DELETE CASCADE
);

CREATE TABLE logs (
  tenant text NOT NULL,
  vm text NOT NULL,
  disk text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('log', 'chunk')),
  generation bigint NOT NULL,
  sequence bigint NOT NULL,
  key text NOT NULL,
  size bigint NOT NULL,
  sha256 text NOT NULL,
  consistency text NOT NULL,
  created_at timestamptz NOT NULL,
  committed_at timestamptz NOT NULL DEFAULT now(),
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'applied', 'rejected', 'skipped')),
  applied_at timestamptz,
  error text,
  PRIMARY KEY (tenant, vm, disk, kind, generation, sequence),
  FOREIGN KEY (tenant, vm, disk) REFERENCES disks(tenant, vm, id) ON DELETE CASCADE
);
CREATE INDEX logs_pending ON logs (tenant, vm, disk, generation, sequence) WHERE status = 'pending';

CREATE TABLE bases (
  tenant text NOT NULL,
  vm text NOT NULL,
  disk text NOT NULL,
  generation bigint NOT NULL,
  mode text NOT NULL CHECK (mode IN ('full', 'delta')),
  chunk_count bigint NOT NULL,
  consistency text NOT NULL,
  created_at timestamptz NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'applied', 'rejected')),
  PRIMARY KEY (tenant, vm, disk, generation),
  FOREIGN KEY (tenant, vm, disk) REFERENCES disks(tenant, vm, id) ON DELETE CASCADE
);

CREATE TABLE recovery_points (
  id bigserial PRIMARY KEY,
  tenant text NOT NULL,
  vm text NOT NULL,
  created_at timestamptz NOT NULL,
  consistency text NOT NULL,
  layer text NOT NULL,
  FOREIGN KEY (tenant, vm) REFERENCES vms(tenant, name) ON DELETE CASCADE
);
CREATE INDEX recovery_points_vm ON recovery_points (tenant, vm, created_at);
