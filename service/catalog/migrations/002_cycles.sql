-- Recovery points that are one instant of the whole VM: every committed log records the VM cycle it
-- belongs to and the agent's capture time of that cycle (null for a version-1 log, which is its own
-- cycle); every disk records the cycle of the last log (or base) it applied; a recovery point records
-- the cycle it holds on every disk and its capture time. Points used by failovers are pinned.

ALTER TABLE logs ADD COLUMN cycle bigint;

ALTER TABLE logs ADD COLUMN captured_at timestamptz;

CREATE INDEX logs_vm_cycle ON logs (tenant, vm, cycle) WHERE cycle IS NOT NULL;

ALTER TABLE disks ADD COLUMN applied_cycle bigint;

ALTER TABLE recovery_points ADD COLUMN cycle bigint;

ALTER TABLE recovery_points ADD COLUMN captured_at timestamptz;

CREATE TABLE point_pins (
  point_id bigint NOT NULL REFERENCES recovery_points(id) ON DELETE CASCADE,
  holder text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (point_id, holder)
);
