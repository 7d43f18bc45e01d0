-- Per-tenant settings an operator may set (docs/failover.md): each NULL means the service's default
-- from lifeboat.json.
-- test_failover_max_hours: how long a test failover of the tenant may run before it is stopped with
-- its report (config failover.testMaxHours, 24 h by default).
ALTER TABLE tenants ADD COLUMN test_failover_max_hours double precision
  CHECK (test_failover_max_hours IS NULL OR (test_failover_max_hours > 0 AND test_failover_max_hours <= 720));
