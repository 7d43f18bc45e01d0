-- Public addresses for failed-over VMs (docs/failover-public-ips.md): the hoster's pools of addresses
-- routed to the failover hosts, each address granted to at most one tenant, each tenant's mappings of
-- a granted address 1:1 to one VM's DR address with a port allow-list, and what each failover applied
-- on its host (nftables), which is what removal and the drill report read.

CREATE TABLE public_ip_pools (
  name text PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public_ips (
  -- Canonical text (dotted quad, RFC 5952 IPv6).
  address text PRIMARY KEY,
  pool text NOT NULL REFERENCES public_ip_pools(name) ON DELETE CASCADE,
  -- The tenant it is granted to (none: free in its pool).
  tenant text REFERENCES tenants(name) ON DELETE SET NULL,
  granted_at timestamptz,
  -- Its order in the pool as the hoster gave it (grants by count take the first free ones).
  position integer NOT NULL
);
CREATE INDEX public_ips_pool ON public_ips (pool, position);
CREATE INDEX public_ips_tenant ON public_ips (tenant);

CREATE TABLE public_ip_mappings (
  address text PRIMARY KEY REFERENCES public_ips(address),
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  vm text NOT NULL,
  -- The NIC whose planned address of the public address's family is the DR address, or the DR
  -- address itself (at least one, and with both the address must be the NIC's).
  mac text,
  dr_address text,
  -- tcp/22, udp/60000-61000, icmp: what reaches the VM through the public address.
  allow text[] NOT NULL DEFAULT '{}',
  -- Applied to test failovers too (else real failovers only).
  test boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK (mac IS NOT NULL OR dr_address IS NOT NULL)
);
CREATE INDEX public_ip_mappings_vm ON public_ip_mappings (tenant, vm);

CREATE TABLE failover_public_ips (
  failover_id text NOT NULL REFERENCES failovers(id) ON DELETE CASCADE,
  address text NOT NULL,
  dr_address text NOT NULL,
  mac text,
  allow text[] NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  removed_at timestamptz,
  PRIMARY KEY (failover_id, address)
);
-- One failover at a time holds a public address.
CREATE UNIQUE INDEX failover_public_ips_held ON failover_public_ips (address) WHERE removed_at IS NULL;
