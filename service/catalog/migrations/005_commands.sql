-- Commands to agents (docs/formats/agent-protocol.md, commands): how the hoster reaches an agent,
-- which accepts no inbound connection. The agent picks its commands up over its own outbound
-- connection (GET /v1/commands, a long-poll), reports progress and one result. A command is addressed
-- to one server of one tenant and is delivered to nobody else. The row is the authority: delivery is
-- at least once (a delivered command that has not finished is delivered again to a restarted agent,
-- told apart by delivered_to, the agent process's instance id), and the agent is idempotent by id.

CREATE TABLE agent_commands (
  id text PRIMARY KEY,
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  -- The server the command is for: the VM's server at the time it was queued.
  server_fqdn text NOT NULL,
  vm text NOT NULL,
  -- planned-failover today, failback and shutdown later.
  kind text NOT NULL,
  payload jsonb NOT NULL DEFAULT '{}',
  state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'delivered', 'running', 'done', 'failed', 'cancelled')),
  result jsonb,
  error text,
  -- What the agent reported, in order: [{"step", "detail", "at"}].
  progress jsonb NOT NULL DEFAULT '[]',
  -- The agent instance it was last delivered to, and how often it was delivered.
  delivered_to text,
  deliveries integer NOT NULL DEFAULT 0,
  -- Who queued it (a failover id, an operator).
  requested_by text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now(),
  delivered_at timestamptz,
  finished_at timestamptz,
  -- A command still queued at this time is not delivered any more: it fails as expired.
  expires_at timestamptz NOT NULL,
  FOREIGN KEY (tenant, vm) REFERENCES vms(tenant, name) ON DELETE CASCADE
);

CREATE INDEX agent_commands_open ON agent_commands (tenant, server_fqdn) WHERE state IN ('queued', 'delivered', 'running');

CREATE INDEX agent_commands_vm ON agent_commands (tenant, vm, created_at);
