/**
 * lifeboat-agent's commands: one file per subcommand, each imported only when the command line names
 * it (shared/cli/lazy.ts). A new command is a row here with the description its file gives it.
 */
import type { LazyCommand } from '../../shared/cli/lazy.js';

export const agentCommands: readonly LazyCommand[] = [
  {
    command: 'disk', description: 'inspect, create, convert and compare virtual disk images', group: true,
    load: async () => {
      const [info, create, convert, compare] = await Promise.all([import('./disk-info.js'), import('./disk-create.js'), import('./disk-convert.js'), import('./disk-compare.js')]);
      return (disk) => {
        info.registerDiskInfo(disk);
        create.registerDiskCreate(disk);
        convert.registerDiskConvert(disk);
        compare.registerDiskCompare(disk);
      };
    },
  },
  { command: 'log', description: 'inspect change logs (.hrl)', group: true, load: async () => (await import('./log-inspect.js')).registerLogInspect },
  { command: 'enroll [token]', description: "enroll this server with the hoster's service using a one-time token", load: async () => (await import('./enroll.js')).registerEnroll },
  {
    command: 'protect <vm>', description: 'protect a VM: replicate its disks to the hoster every cycle (again on a protected VM: change settings, add disks)',
    load: async () => (await import('./protect.js')).registerProtect,
  },
  { command: 'unprotect <vm>', description: 'stop protecting a VM (the hoster keeps its replicas and recovery points)', load: async () => (await import('./unprotect.js')).registerUnprotect },
  { command: 'pause <vm>', description: 'pause replication of a VM (changes keep being tracked and ship after resume)', load: async () => (await import('./pause.js')).registerPause },
  { command: 'resume <vm>', description: 'resume replication of a paused VM', load: async () => (await import('./resume.js')).registerResume },
  {
    command: 'status', description: 'show each protected VM: state, last cycle, RPO lag, pending bytes, initial-replication progress',
    load: async () => (await import('./status.js')).registerStatus,
  },
  { command: 'run', description: 'replicate protected VMs: the daemon, or with --once what is due now', load: async () => (await import('./run.js')).registerRun },
  {
    command: 'failover <vm>', description: 'fail a VM over to the hoster: --planned shuts it down here, ships a final cycle and hands it over (no data loss)',
    load: async () => (await import('./failover.js')).registerFailover,
  },
  {
    command: 'reverse <vm>', description: 'apply what a failed-over VM writes at the hoster to its disks here (reverse replication)',
    load: async () => (await import('./reverse.js')).registerReverse,
  },
  { command: 'envelope-key', description: 'the keys reverse logs are sealed to: register a new one', group: true, load: async () => (await import('./envelope-key.js')).registerEnvelopeKeyCommands },
];
