/**
 * The whole path on the file store (the service's own upload route): an agent enrolled by its own
 * code replicates VHDXs made by qemu-img and written by qemu-io through the real service and its merge
 * worker, and the exported latest point equals the source (`qemu-img compare`), also after the agent
 * was killed mid-scan, mid-upload and mid-base (replica-suite.ts, which s3rver and Azurite run too).
 * Here besides: `protect --bandwidth` holds a VM's uploads, parallel chunks together, to the rate.
 */
import { expect, it } from 'vitest';
import { UploadBurstBytes } from '../../agent/transport/bandwidth.js';
import { runBin } from '../helpers.js';
import { MiB, fileStore, storeSuite } from './scenario.js';
import { replicaTests } from './replica-suite.js';

storeSuite(fileStore, (use) => {
  replicaTests(use);

  it('protect --bandwidth RATE holds the VM\'s uploads together to RATE: a base of parallel chunks takes at least its bytes / RATE', async (ctx) => {
    const s = use(ctx);
    // Four chunks of 8 MiB with 256 KiB of random bytes each: the base sends about 1 MiB in four parallel uploads.
    const disk = await s.newDisk('web02', '40M');
    for (let i = 0; i < 4; i++) await s.writeRandom(disk, i * 8 * MiB + MiB, 256 << 10);
    const rate = 128 << 10;
    const protect = await runBin('agent', ['protect', 'web02', '--disk', disk, '--bandwidth', '128K', '--state-dir', s.state.dir]);
    expect(protect.code, protect.stderr).toBe(0);
    expect((await s.state.readConfig('web02')).bandwidthBytesPerSec).toBe(rate);
    for (const vm of await s.state.listVms()) if (vm !== 'web02') await s.state.writeConfig({ ...(await s.state.readConfig(vm)), paused: true }); // only web02 in this pass

    const started = performance.now();
    await s.runOnce();
    const ms = performance.now() - started;
    const sent = (await s.progress('web02')).disks.disk0!.initial.bytesSent;
    expect(sent).toBeGreaterThan(MiB);
    // A lower bound only: the bytes beyond one burst cannot have gone out faster than the rate (less
    // 50 ms: Node's timers may fire a little before the real clock says they are due).
    expect(ms).toBeGreaterThanOrEqual(((sent - UploadBurstBytes) / rate) * 1000 - 50);
    await s.expectReplicaEqualsSource('web02', 'disk0', disk);
  });
});
