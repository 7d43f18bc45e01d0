/**
 * The change log `.hrl` (docs/formats/hrl.md, version 2; version 1 still read), sealed in the envelope (docs/formats/envelope.md).
 *
 * Writing (agent): `writeLog(header, { extents, read }, { recipient })` yields the sealed bytes of a log
 * whose extents are read from the disk chunk by chunk; `writeLogFile` writes them to a file.
 *
 * Reading (merge worker, `log inspect`): `readLog(sealed, { key, expect })` returns a LogReader with the
 * authenticated header; `for await (const item of reader.items())` streams zero extents and data chunks,
 * each verified before it is released. The log is whole only when the loop ended without error
 * (`reader.trailer` is then set): stage what you write until then.
 *
 * The unsealed layer (`encodeLog`, `LogReader.open`) is exported for tests and tools.
 */
export { DefaultZstdLevel } from './codec.js';
export {
  Compressions, Consistencies, DefaultChunkShift, LogFormatVersion, LogFormatVersions, LogKinds, LogMagic, decodeLogHeader, encodeLogHeader,
  type Compression, type Consistency, type LogHeader, type LogKind,
} from './header.js';
export { LogReader, type LogItem, type LogTrailer } from './reader.js';
export {
  readLog, readLogFile, writeLog, writeLogFile, type LogIdentity, type ReadLogOptions, type WriteLogOptions,
} from './sealed.js';
export { completeHeader, encodeLog, type EncodeOptions, type LogHeaderInit, type LogSource } from './writer.js';
