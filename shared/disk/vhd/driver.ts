// Placeholder until the vhd module lands: the registry needs an entry to compile.
import { ErrUnsupported } from '../../errors.js';
import type { DiskFormatDriver } from '../types.js';

export const vhdDriver: DiskFormatDriver = {
  format: 'vhd',
  probe: () => false,
  open: async () => { throw ErrUnsupported('vhd is not implemented yet'); },
  create: async () => { throw ErrUnsupported('vhd is not implemented yet'); },
};
