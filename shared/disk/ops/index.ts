/** Generic operations over any DiskImage: convert, flatten, compare, merge a child into its parent. */
export { convertDisk, flatten, type ConvertOptions } from './convert.js';
export { compareDisks, type CompareResult } from './compare.js';
export { mergeChild } from './merge.js';
export { digestRanges, type RangeDigest } from './digest.js';
export type { Progress, ProgressFn } from './copy.js';
