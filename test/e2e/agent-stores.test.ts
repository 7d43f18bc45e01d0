/**
 * The whole path of agent-replica.test.ts on the object stores with upload URLs of their own: the
 * service on s3rver (presigned S3 PUTs) and on Azurite (SAS URLs), both started by this file. Outside
 * CI an emulator that cannot start skips its suite with the reason printed; under CI it fails the run.
 */
import { azuriteStore, s3rverStore, storeSuite } from './scenario.js';
import { replicaTests } from './replica-suite.js';

for (const store of [s3rverStore, azuriteStore]) {
  storeSuite(store, (use) => {
    replicaTests(use);
  });
}
