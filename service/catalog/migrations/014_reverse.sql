-- Reverse replication (docs/reverse.md): the writes a failed-over VM makes at the hoster, closed
-- each reverse cycle into a sealed .hrl log under the tenant's reverse prefix, for the VM's agent
-- to apply to its on-premises disk.

-- The envelope keys agents registered (agent protocol §14): public JWKs only. The service seals a
-- reverse log to the newest key of the VM's server; older rows stay so a log names the key it was
-- sealed to (kid) and the agent keeps that private key until nothing sealed to it is pending.
CREATE TABLE agent_envelope_keys (
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  server_fqdn text NOT NULL,
  -- RFC 7638 thumbprint (SHA-256, base64url) of the public JWK: checked at registration.
  kid text NOT NULL,
  jwk jsonb NOT NULL,
  registered_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, server_fqdn, kid)
);
CREATE INDEX agent_envelope_keys_newest ON agent_envelope_keys (tenant, server_fqdn, registered_at DESC);

-- One row per disk of a VM whose writes at the hoster go back: the reverse generation and the next
-- sequence a cycle will write, the failover whose overlay is read, and what the agent says it applied.
CREATE TABLE reverse_disks (
  tenant text NOT NULL,
  vm text NOT NULL,
  disk text NOT NULL,
  failover_id text NOT NULL,
  -- The index of the disk in the failover's spec (its overlay diskN.qcow2, node ovN).
  position integer NOT NULL,
  generation bigint NOT NULL CHECK (generation BETWEEN 1 AND 4294967295),
  next_sequence bigint NOT NULL DEFAULT 1 CHECK (next_sequence >= 1),
  applied_generation bigint NOT NULL DEFAULT 0,
  applied_sequence bigint NOT NULL DEFAULT 0,
  applied_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, vm, disk),
  FOREIGN KEY (tenant, vm) REFERENCES vms(tenant, name) ON DELETE CASCADE
);

-- The committed reverse logs: a row is written only after its object is stored whole, so an agent
-- never sees a key whose object is missing; a cycle killed before the row repeats under the same
-- sequence (its object is overwritten, never referenced before).
CREATE TABLE reverse_logs (
  tenant text NOT NULL,
  vm text NOT NULL,
  disk text NOT NULL,
  generation bigint NOT NULL,
  sequence bigint NOT NULL CHECK (sequence >= 1),
  kind text NOT NULL CHECK (kind IN ('delta', 'incremental')),
  key text NOT NULL,
  size bigint NOT NULL,
  sha256 text NOT NULL,
  kid text NOT NULL,
  cycle bigint NOT NULL,
  captured_at timestamptz NOT NULL,
  -- Bytes of data extents in the log, and bytes the bitmap said changed (what went over the wire
  -- against what the VM wrote).
  data_bytes bigint NOT NULL,
  changed_bytes bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, vm, disk, generation, sequence),
  FOREIGN KEY (tenant, vm, disk) REFERENCES reverse_disks(tenant, vm, disk) ON DELETE CASCADE
);
