/**
 * The whole path on the file store (the service's own upload route): an agent enrolled by its own
 * code replicates VHDXs made by qemu-img and written by qemu-io through the real service and its merge
 * worker, and the exported latest point equals the source (`qemu-img compare`), also after the agent
 * was killed mid-scan, mid-upload and mid-base (replica-suite.ts, which s3rver and Azurite run too).
 */
import { fileStore, storeSuite } from './scenario.js';
import { replicaTests } from './replica-suite.js';

storeSuite(fileStore, (use) => {
  replicaTests(use);
});
