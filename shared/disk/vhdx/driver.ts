// Placeholder until the vhdx module lands: the registry needs an entry to compile.
import { ErrUnsupported } from '../../errors.js';
import type { DiskFormatDriver } from '../types.js';

export const vhdxDriver: DiskFormatDriver = {
  format: 'vhdx',
  probe: () => false,
  open: async () => { throw ErrUnsupported('vhdx is not implemented yet'); },
  create: async () => { throw ErrUnsupported('vhdx is not implemented yet'); },
};
