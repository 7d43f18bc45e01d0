/**
 * Header updates by the two-header scheme (MS-VHDX §2.2.2.1): a new header with the next sequence
 * number goes into the slot that is not current, and is made durable before anything relies on it.
 * A torn write leaves a header whose CRC-32C fails, so readers keep the other, older one.
 */
import type { VhdxFile } from './file.js';
import { HeaderOffsets, newGuid, serializeHeader, type VhdxHeader } from './format.js';

export class HeaderState {
  constructor(public current: VhdxHeader, public slot: 0 | 1) {}

  /**
   * Writes the current header with the patch applied into the other slot, then syncs.
   * Before the write, everything already written to the file is made durable too, so the new
   * header never describes state that is not yet on disk.
   */
  async update(file: VhdxFile, patch: Partial<Omit<VhdxHeader, 'sequenceNumber'>>): Promise<void> {
    const next: VhdxHeader = { ...this.current, ...patch, sequenceNumber: this.current.sequenceNumber + 1n };
    const slot = this.slot === 0 ? 1 : 0;
    await file.sync();
    await file.write(serializeHeader(next), HeaderOffsets[slot]);
    await file.sync();
    this.current = next;
    this.slot = slot;
  }

  /** Marks the file (and, when data is true, the virtual disk's contents) as modified from now on. */
  async beginWrites(file: VhdxFile, data: boolean): Promise<void> {
    await this.update(file, data ? { fileWriteGuid: newGuid(), dataWriteGuid: newGuid() } : { fileWriteGuid: newGuid() });
  }
}
