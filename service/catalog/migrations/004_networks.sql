-- Failover networking: the hoster's DR networks, their grants to tenants, and each tenant's network
-- mappings (source subnet -> DR subnet, host part kept). A tenant names only networks granted to it;
-- NIC settings (vm_nics.settings, 003) and mappings hold the network's name, checked against the
-- grants before they are stored, and a grant still in use cannot be revoked.

CREATE TABLE networks (
  name text PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('production', 'test')),
  -- The Linux bridge on the failover hosts, and the VLAN on it (none: untagged).
  bridge text NOT NULL,
  vlan integer CHECK (vlan BETWEEN 1 AND 4094),
  -- The failover hosts that carry it (empty: every host).
  hosts text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE network_grants (
  network text NOT NULL REFERENCES networks(name) ON DELETE CASCADE,
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  granted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (network, tenant)
);
CREATE INDEX network_grants_tenant ON network_grants (tenant);

CREATE TABLE network_mappings (
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  kind text NOT NULL CHECK (kind IN ('production', 'test')),
  source text NOT NULL,
  target text NOT NULL,
  gateway text,
  dns text[] NOT NULL DEFAULT '{}',
  search text[] NOT NULL DEFAULT '{}',
  network text,
  -- The order the tenant gave them in (lists and exports keep it).
  position integer NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, kind, source)
);
