import { emulatorsMustRun, startS3rver } from '../../test/objectstore/emulators.js';
import { objectStoreConformance } from './conformance.js';
import { openObjectStore } from './index.js';

objectStoreConformance('s3 (s3rver)', async () => {
  const emulator = await startS3rver();
  const store = await openObjectStore(emulator.url, { env: emulator.env });
  return {
    store,
    teardown: emulator.stop,
    grantsUnverified: 's3rver does not verify SigV4 signatures (real S3 does; LIFEBOAT_TEST_S3_URL runs this case)',
    listOrderUnreliable: 's3rver lists directories before sibling keys (real S3 lists in byte order)',
  };
}, { mustRun: emulatorsMustRun });

const realUrl = process.env.LIFEBOAT_TEST_S3_URL;
objectStoreConformance('s3 (real, LIFEBOAT_TEST_S3_URL)', async () => ({ store: await openObjectStore(realUrl ?? '') }), {
  mustRun: false,
  ...(realUrl ? {} : { skipReason: 'LIFEBOAT_TEST_S3_URL is not set (s3://bucket/prefix?region=…, credentials from AWS_* variables)' }),
});
