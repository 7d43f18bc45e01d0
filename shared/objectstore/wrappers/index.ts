/** Wrappers that compose around any ObjectStore: withLogging(withRetry(withTimeout(withFaults(store)))). */
export { ForwardingStore, mapBody, mapStream } from './base.js';
export { RetryBudget, withRetry } from './retry.js';
export type { RetryOptions } from './retry.js';
export { withTimeout } from './timeout.js';
export type { TimeoutOptions } from './timeout.js';
export { Semaphore, withConcurrencyLimit } from './concurrency.js';
export { TokenBucket, paced, withBandwidthLimit } from './bandwidth.js';
export type { BandwidthOptions, Clock } from './bandwidth.js';
export { withFaults } from './faults.js';
export { seededRandom } from '../../random.js';
export type { FaultOperation, FaultOptions, FaultStats, FaultyStore } from './faults.js';
export { redactSecrets, withLogging } from './logging.js';
export type { StoreLogger } from './logging.js';
