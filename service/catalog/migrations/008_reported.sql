-- What an agent reports of a VM with its registration (lifeboat-agent protect --firmware … --nic …)
-- beside what an operator sets: a reported value fills a field the operator has not set, and an
-- operator's edit is never overwritten by a later report.

-- Per field of vm_hardware, who set its value: {"cpus": "reported", "firmware": "operator", …};
-- a field absent has its default. The row's source says the same in one word.
ALTER TABLE vm_hardware ADD COLUMN sources jsonb NOT NULL DEFAULT '{}';

UPDATE vm_hardware SET sources = '{"firmware": "operator", "secureBoot": "operator", "cpus": "operator", "memoryMiB": "operator", "guestOs": "operator", "disks": "operator", "readyProbes": "operator"}' WHERE source = 'operator';

-- Who put the NIC there or last changed it: the agent's report, or an operator (every NIC before this).
ALTER TABLE vm_nics ADD COLUMN source text NOT NULL DEFAULT 'operator' CHECK (source IN ('reported', 'operator'));

-- The addresses the agent last reported for the NIC at the source; network mappings start from the
-- operator's record (reported_addresses) and, when there is none, from these.
ALTER TABLE vm_nics ADD COLUMN agent_addresses text[] NOT NULL DEFAULT '{}';

ALTER TABLE vm_nics ADD COLUMN agent_reported_at timestamptz;
