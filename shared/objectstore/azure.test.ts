import { emulatorsMustRun, startAzurite } from '../../test/objectstore/emulators.js';
import { objectStoreConformance } from './conformance.js';
import { openObjectStore } from './index.js';

objectStoreConformance('azure (Azurite)', async () => {
  const emulator = await startAzurite();
  const store = await openObjectStore(emulator.url, { env: emulator.env });
  return { store, teardown: emulator.stop };
}, { mustRun: emulatorsMustRun });

const realUrl = process.env.LIFEBOAT_TEST_AZURE_URL;
objectStoreConformance('azure (real, LIFEBOAT_TEST_AZURE_URL)', async () => ({ store: await openObjectStore(realUrl ?? '') }), {
  mustRun: false,
  ...(realUrl ? {} : { skipReason: 'LIFEBOAT_TEST_AZURE_URL is not set (azure://account/container/prefix, credentials from AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_KEY)' }),
});
