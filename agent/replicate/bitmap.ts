/** The finished-chunks bitmap of progress.json: base64, chunk i = bit i%8 of byte i/8 (LSB first). */
export function hasBit(bitmap: string, i: number): boolean {
  const bytes = Buffer.from(bitmap, 'base64');
  return ((bytes[i >> 3] ?? 0) >> (i & 7) & 1) === 1;
}

export function withBit(bitmap: string, i: number): string {
  const old = Buffer.from(bitmap, 'base64');
  const bytes = Buffer.alloc(Math.max(old.length, (i >> 3) + 1));
  old.copy(bytes);
  bytes[i >> 3]! |= 1 << (i & 7);
  return bytes.toString('base64');
}
