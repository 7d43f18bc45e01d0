-- The first log of a disk's generation closed after an instant, in one index probe: the dashboard's
-- and the status document's count of the last hour's cycles (replication/status.ts, receivedSinceSql)
-- takes the span of sequences from it to the generation's last instead of counting rows.
CREATE INDEX logs_closed ON logs (tenant, vm, disk, kind, generation, created_at);
