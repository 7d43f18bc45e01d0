-- Usage metering, quotas and hardware reservations (docs/usage.md).
--
-- usage_events is an append-only record of what happened, written by triggers in the same
-- transaction as the state change it records, from the changed row's own timestamp, so that no code
-- path can change state without it being metered. It has no foreign keys: a tenant's, VM's or
-- failover's history outlives the row. The meter (service/usage/meter.ts) turns pairs of start/end
-- events into intervals, split at UTC day boundaries.
--   vm_protected / vm_unprotected      subject: the VM; a VM registered, protected again, unprotected, deleted
--   bytes_received                     subject: the VM; bytes: a committed log's or base chunk's size
--   failover_started / failover_ended  subject: the failover id; data: kind, cpus, memoryMiB, guestOs (at start)
--   public_ip_applied / public_ip_removed  subject: failover id/address; data: vm
--   plan_run_started                   subject: the plan run id (the first failover naming it)
--   replica_bytes                      subject: ''; bytes: the tenant's allocated replica storage, sampled

CREATE TABLE usage_events (
  id bigserial PRIMARY KEY,
  tenant text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('vm_protected', 'vm_unprotected', 'bytes_received', 'failover_started', 'failover_ended',
    'public_ip_applied', 'public_ip_removed', 'plan_run_started', 'replica_bytes')),
  subject text NOT NULL,
  at timestamptz NOT NULL,
  bytes bigint,
  data jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX usage_events_tenant_at ON usage_events (tenant, at, id);
CREATE INDEX usage_events_subject ON usage_events (subject, kind);

-- Quotas (NULL: none) and the hardware plan's reservation on the failover hosts (NULL: none).
ALTER TABLE tenants ADD COLUMN quota_protected_vms integer CHECK (quota_protected_vms IS NULL OR quota_protected_vms >= 0);
ALTER TABLE tenants ADD COLUMN quota_replica_bytes bigint CHECK (quota_replica_bytes IS NULL OR quota_replica_bytes >= 0);
ALTER TABLE tenants ADD COLUMN quota_test_failovers integer CHECK (quota_test_failovers IS NULL OR quota_test_failovers >= 0);
ALTER TABLE tenants ADD COLUMN reserved_cpus integer CHECK (reserved_cpus IS NULL OR reserved_cpus >= 0);
ALTER TABLE tenants ADD COLUMN reserved_memory_mib bigint CHECK (reserved_memory_mib IS NULL OR reserved_memory_mib >= 0);
ALTER TABLE tenants ADD COLUMN reserved_storage_bytes bigint CHECK (reserved_storage_bytes IS NULL OR reserved_storage_bytes >= 0);

CREATE FUNCTION usage_vms() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.protected THEN
      INSERT INTO usage_events (tenant, kind, subject, at) VALUES (NEW.tenant, 'vm_protected', NEW.name, NEW.created_at);
    END IF;
  ELSIF TG_OP = 'UPDATE' THEN
    IF NEW.protected IS DISTINCT FROM OLD.protected THEN
      INSERT INTO usage_events (tenant, kind, subject, at)
        VALUES (NEW.tenant, CASE WHEN NEW.protected THEN 'vm_protected' ELSE 'vm_unprotected' END, NEW.name, NEW.updated_at);
    END IF;
  ELSIF OLD.protected THEN
    INSERT INTO usage_events (tenant, kind, subject, at) VALUES (OLD.tenant, 'vm_unprotected', OLD.name, now());
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER usage_vms AFTER INSERT OR UPDATE OF protected OR DELETE ON vms FOR EACH ROW EXECUTE FUNCTION usage_vms();

CREATE FUNCTION usage_logs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO usage_events (tenant, kind, subject, at, bytes) VALUES (NEW.tenant, 'bytes_received', NEW.vm, NEW.committed_at, NEW.size);
  RETURN NULL;
END $$;
CREATE TRIGGER usage_logs AFTER INSERT ON logs FOR EACH ROW EXECUTE FUNCTION usage_logs();

CREATE FUNCTION usage_failovers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    IF OLD.started_at IS NOT NULL AND OLD.ended_at IS NULL THEN
      INSERT INTO usage_events (tenant, kind, subject, at) VALUES (OLD.tenant, 'failover_ended', OLD.id, now());
    END IF;
    RETURN NULL;
  END IF;
  IF NEW.started_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.started_at IS NULL) THEN
    INSERT INTO usage_events (tenant, kind, subject, at, data) VALUES (NEW.tenant, 'failover_started', NEW.id, NEW.started_at,
      jsonb_build_object('vm', NEW.vm, 'kind', NEW.kind, 'cpus', coalesce((NEW.spec->'hardware'->>'cpus')::int, 1),
        'memoryMiB', coalesce((NEW.spec->'hardware'->>'memoryMiB')::bigint, 1024), 'guestOs', coalesce(NEW.spec->'hardware'->>'guestOs', 'linux')));
  END IF;
  IF NEW.started_at IS NOT NULL AND NEW.ended_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.ended_at IS NULL) THEN
    INSERT INTO usage_events (tenant, kind, subject, at) VALUES (NEW.tenant, 'failover_ended', NEW.id, NEW.ended_at);
  END IF;
  IF NEW.plan_run_id IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.plan_run_id IS DISTINCT FROM NEW.plan_run_id)
    AND NOT EXISTS (SELECT 1 FROM usage_events WHERE tenant = NEW.tenant AND subject = NEW.plan_run_id AND kind = 'plan_run_started') THEN
    INSERT INTO usage_events (tenant, kind, subject, at) VALUES (NEW.tenant, 'plan_run_started', NEW.plan_run_id, NEW.requested_at);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER usage_failovers AFTER INSERT OR UPDATE OF started_at, ended_at, plan_run_id OR DELETE ON failovers FOR EACH ROW EXECUTE FUNCTION usage_failovers();

CREATE FUNCTION usage_public_ips() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  t text;
  v text;
BEGIN
  -- The tenant of a removal is the one its application was recorded for: the failover's row may be
  -- going in the same statement (a cascade).
  IF TG_OP = 'DELETE' OR (NEW.removed_at IS NOT NULL AND OLD.removed_at IS NULL) THEN
    IF TG_OP = 'DELETE' AND OLD.removed_at IS NOT NULL THEN
      RETURN NULL;
    END IF;
    SELECT tenant INTO t FROM usage_events WHERE subject = OLD.failover_id || '/' || OLD.address AND kind = 'public_ip_applied' ORDER BY id DESC LIMIT 1;
    IF t IS NOT NULL THEN
      INSERT INTO usage_events (tenant, kind, subject, at)
        VALUES (t, 'public_ip_removed', OLD.failover_id || '/' || OLD.address, CASE WHEN TG_OP = 'DELETE' THEN now() ELSE NEW.removed_at END);
    END IF;
  ELSIF NEW.removed_at IS NULL AND (TG_OP = 'INSERT' OR OLD.removed_at IS NOT NULL) THEN
    SELECT tenant, vm INTO t, v FROM failovers WHERE id = NEW.failover_id;
    INSERT INTO usage_events (tenant, kind, subject, at, data) VALUES (t, 'public_ip_applied', NEW.failover_id || '/' || NEW.address, NEW.applied_at, jsonb_build_object('vm', v));
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER usage_public_ips AFTER INSERT OR UPDATE OF removed_at OR DELETE ON failover_public_ips FOR EACH ROW EXECUTE FUNCTION usage_public_ips();
