/**
 * Failed sign-ins, counted in Redis per username and per client address over a window: past
 * MaxFailuresPerUser for a name or MaxFailuresPerAddress from an address, sign-in is refused (before
 * the password is checked) until the window ends. A successful sign-in clears the name's count only,
 * so one good account does not reset an address trying many.
 */
import type { RedisSource } from './sessions.js';

export const FailureWindowSeconds = 15 * 60;
export const MaxFailuresPerUser = 5;
export const MaxFailuresPerAddress = 20;

export class SignInLimit {
  constructor(private readonly redis: RedisSource, private readonly prefix: string) {}

  /** Seconds until sign-in may be tried again for this name from this address, or 0 when it may now. */
  async blockedFor(username: string, address: string): Promise<number> {
    const r = await this.redis();
    const replies = (await r.multi().get(this.userKey(username)).get(this.addrKey(address)).ttl(this.userKey(username)).ttl(this.addrKey(address)).exec()) ?? [];
    const [u, a, ut, at] = replies.map(([, v]) => v as string | number | null);
    const blockedUser = Number(u ?? 0) >= MaxFailuresPerUser ? Number(ut) : 0;
    const blockedAddr = Number(a ?? 0) >= MaxFailuresPerAddress ? Number(at) : 0;
    return Math.max(blockedUser, blockedAddr, 0);
  }

  async failed(username: string, address: string): Promise<void> {
    const r = await this.redis();
    await r.multi().incr(this.userKey(username)).expire(this.userKey(username), FailureWindowSeconds, 'NX')
      .incr(this.addrKey(address)).expire(this.addrKey(address), FailureWindowSeconds, 'NX').exec();
  }

  async succeeded(username: string): Promise<void> {
    await (await this.redis()).del(this.userKey(username));
  }

  private userKey(username: string): string {
    return `${this.prefix}signin-fail:user:${username.toLowerCase()}`;
  }

  private addrKey(address: string): string {
    return `${this.prefix}signin-fail:addr:${address}`;
  }
}

