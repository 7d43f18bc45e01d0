// Placeholder until the raw module lands: the registry needs an entry to compile.
import { ErrUnsupported } from '../errors.js';
import type { DiskFormatDriver } from './types.js';

export const rawDriver: DiskFormatDriver = {
  format: 'raw',
  probe: () => true,
  open: async () => { throw ErrUnsupported('raw is not implemented yet'); },
  create: async () => { throw ErrUnsupported('raw is not implemented yet'); },
};
