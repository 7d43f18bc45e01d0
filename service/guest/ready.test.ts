import { describe, expect, it } from 'vitest';
import { parseGuestReady } from './ready.js';

const block = [
  'LIFEBOAT-GUEST-READY',
  'LIFEBOAT-IP-ADDR-BEGIN',
  '[{"ifname":"eth0","address":"52:54:00:00:00:01","addr_info":[{"family":"inet","local":"192.0.2.10","prefixlen":24}]}]',
  'LIFEBOAT-IP-ADDR-END',
  'LIFEBOAT-IP-ROUTE-BEGIN',
  '[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"}]',
  'LIFEBOAT-IP-ROUTE-END',
  'LIFEBOAT-IP6-ROUTE-BEGIN',
  '[]',
  'LIFEBOAT-IP6-ROUTE-END',
  'LIFEBOAT-RESOLV-CONF-BEGIN',
  '# generated',
  'nameserver 192.0.2.53',
  'LIFEBOAT-RESOLV-CONF-END',
  'LIFEBOAT-GUEST-READY-END',
];

describe('parseGuestReady', () => {
  it('reads the last whole report among console noise and \\r\\n line ends', () => {
    const text = `[    1.0] kernel\r\n${block.join('\r\n')}\r\n[  OK  ] Started getty\r\n`;
    const r = parseGuestReady(text)!;
    expect(r.addr[0]!.addr_info[0]!.local).toBe('192.0.2.10');
    expect(r.route[0]).toMatchObject({ dst: 'default', gateway: '192.0.2.1' });
    expect(r.route6).toEqual([]);
    expect(r.resolvConf).toBe('# generated\nnameserver 192.0.2.53');
  });

  it('says nothing for a report not finished yet or cut', () => {
    expect(parseGuestReady('booting\n')).toBeUndefined();
    expect(parseGuestReady(block.slice(0, 5).join('\n'))).toBeUndefined();
    const cut = [...block];
    cut[2] = '[{"ifname":';
    expect(parseGuestReady(cut.join('\n'))).toBeUndefined();
  });
});
