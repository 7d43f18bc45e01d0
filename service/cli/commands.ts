/**
 * lifeboat-service's commands: one file per subcommand, each imported only when the command line
 * names it (shared/cli/lazy.ts). A new command is a row here with the description its file gives it.
 */
import type { Command } from 'commander';
import type { LazyCommand } from '../../shared/cli/lazy.js';

/** `failover` and `failover-host` (one module), with `failover plan-ip` from nic.ts. */
async function loadFailover(): Promise<(program: Command) => void> {
  const [failover, nic] = await Promise.all([import('./failover.js'), import('./nic.js')]);
  return (program) => {
    failover.registerFailover(program);
    nic.registerPlanIp(program);
  };
}

export const serviceCommands: readonly LazyCommand[] = [
  { command: 'init', description: 'make a data directory with embedded defaults: config, CA, keys, operator token', load: async () => (await import('./init.js')).registerInit },
  { command: 'serve', description: 'run the agent endpoint, the operator API and (embedded) the merge workers', load: async () => (await import('./serve.js')).registerServe },
  { command: 'worker', description: 'run merge workers alone (needs a PostgreSQL catalog)', load: async () => (await import('./worker.js')).registerWorker },
  { command: 'tenant', description: 'tenants and the servers they authorize', load: async () => (await import('./tenant.js')).registerTenant },
  { command: 'token', description: 'one-time enrollment tokens', load: async () => (await import('./token.js')).registerToken },
  {
    command: 'api-key', description: 'API keys: opaque bearer credentials with a role (and a tenant for tenant roles)',
    load: async () => (await import('./api-key.js')).registerApiKey,
  },
  { command: 'user', description: 'local users of the tenant portal and their roles', load: async () => (await import('./user.js')).registerUser },
  { command: 'vm', description: 'protected VMs', load: async () => (await import('./vm.js')).registerVm },
  { command: 'points <vm>', description: 'list a VM\'s recovery points', load: async () => (await import('./points.js')).registerPoints },
  {
    command: 'export <out>', description: 'write a flat image of a replica disk at a recovery point (the service writes OUT on its host)',
    load: async () => (await import('./export.js')).registerExport,
  },
  {
    command: 'import-media', description: 'load the initial copies an agent wrote to external media (--initial media:DIR) into the replicas',
    load: async () => (await import('./import-media.js')).registerImportMedia,
  },
  {
    command: 'catalog', description: 'the catalog itself: rebuild it from replica storage and the object store',
    load: async () => (await import('./catalog.js')).registerCatalog,
  },
  {
    command: 'backup <out>',
    description: 'write the keys, the configuration and a consistent dump of the catalog to OUT, encrypted under a passphrase (the embedded catalog: with serve stopped)',
    load: async () => (await import('./backup.js')).registerBackup,
  },
  {
    command: 'restore <in>',
    description: 'make a new data directory from a backup: keys, configuration and catalog (replica storage and the object store as the backup names them)',
    load: async () => (await import('./backup.js')).registerRestore,
  },
  {
    command: 'keys', description: 'rotate and retire the service\'s keys without downtime (CA, signing, master, a tenant\'s replica key)',
    load: async () => (await import('./keys.js')).registerKeys,
  },
  { command: 'usage', description: 'metered usage per tenant and UTC day', load: async () => (await import('./usage.js')).registerUsage },
  { command: 'guest', description: 'test guest images', load: async () => (await import('./guest.js')).registerGuest },
  { command: 'failover', description: 'start, inspect and end failovers (test, planned, unplanned)', load: loadFailover },
  {
    command: 'failover-host', description: 'run a failover host alone: it owns failed-over VMs (qemu) and their NBD exports (needs a PostgreSQL catalog)',
    load: loadFailover,
  },
  {
    command: 'failback <failover>', description: 'bring a committed failover\'s VM home: stop it here, ship its last writes, the agent confirms equality and starts it',
    load: async () => (await import('./failback.js')).registerFailback,
  },
  {
    command: 'plan', description: 'recovery plans: ordered groups of VMs with actions between them, run as a test, planned or unplanned failover',
    load: async () => (await import('./plan.js')).registerPlan,
  },
  {
    command: 'network', description: 'DR networks (hoster-owned, granted to tenants), network mappings and bulk NIC settings',
    load: async () => (await import('./network.js')).registerNetwork,
  },
  {
    command: 'public-ip', description: 'public addresses for failed-over VMs: the hoster\'s pools and grants, each tenant\'s 1:1 mappings with port allow-lists',
    load: async () => (await import('./public-ip.js')).registerPublicIp,
  },
  {
    command: 'webhook', description: 'webhook subscriptions to events, their deliveries and redelivery (signed as Standard Webhooks)',
    load: async () => (await import('./webhook.js')).registerWebhook,
  },
];
