/**
 * What every variant of the test guest shares, written into a freshly debootstrapped root:
 * hostname, an empty machine-id (a new one each first boot), root locked, loopback in
 * /etc/network/interfaces with interfaces.d sourced (cloud-init's eni renderer writes there),
 * cloud-init limited to NoCloud and ConfigDrive (so it never waits for a metadata server), the
 * qemu-guest-agent left to Debian's udev rule (started whenever its virtio port appears), and the readiness reporter
 * (lifeboat-guest-ready.service; its output is specified in docs/guest.md "Markers").
 * Per-build files (fstab, bootloader, cloud-init disabled) are written by build.ts.
 */
import { chmod, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export const ReadyMarker = 'LIFEBOAT-GUEST-READY';

/** The reporter: one block on /dev/ttyS0, written with one printf so nothing interleaves inside lines. */
export const ReadyScript = `#!/bin/sh
# lifeboat test guest: reports readiness and the network state it has on the serial console.
# Format: docs/guest.md "Markers". Each JSON document is one line.
section() { printf '%s-BEGIN\\n%s\\n%s-END\\n' "$1" "$2" "$1"; }
block="$(
  printf '\\n${ReadyMarker}\\n'
  section LIFEBOAT-IP-ADDR "$(ip -j addr 2>/dev/null | tr -d '\\n')"
  section LIFEBOAT-IP-ROUTE "$(ip -j route 2>/dev/null | tr -d '\\n')"
  section LIFEBOAT-IP6-ROUTE "$(ip -6 -j route 2>/dev/null | tr -d '\\n')"
  section LIFEBOAT-RESOLV-CONF "$(cat /etc/resolv.conf 2>/dev/null)"
  printf '${ReadyMarker}-END\\n'
)"
printf '%s\\n' "$block" > /dev/ttyS0
`;

export const ReadyUnit = `[Unit]
Description=Report readiness and network state on the serial console (lifeboat test guest)
Wants=network-online.target
After=network-online.target cloud-init.service qemu-guest-agent.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lifeboat-guest-ready
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
`;

const CloudConfig = `# lifeboat test guest: seeds come from a NoCloud cidata disk or a config drive, never a metadata server.
datasource_list: [ NoCloud, ConfigDrive, None ]
# No ssh server in the guest: nothing to make keys for.
ssh_genkeytypes: []
`;

const Interfaces = `# lifeboat test guest: loopback here; cloud-init writes the NICs into interfaces.d.
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
`;

async function put(root: string, path: string, text: string, mode = 0o644): Promise<void> {
  const p = join(root, path);
  await mkdir(dirname(p), { recursive: true });
  await writeFile(p, text);
  await chmod(p, mode);
}

async function enable(root: string, unit: string, target: string): Promise<void> {
  const link = join(root, 'etc/systemd/system', `${target}.wants`, unit);
  await mkdir(dirname(link), { recursive: true });
  await rm(link, { force: true });
  await symlink(`/etc/systemd/system/${unit}`, link);
}

export async function configureGuestRoot(root: string): Promise<void> {
  await put(root, 'etc/hostname', 'lifeboat-guest\n');
  await put(root, 'etc/hosts', '127.0.0.1\tlocalhost\n127.0.1.1\tlifeboat-guest\n::1\tlocalhost ip6-localhost ip6-loopback\n');
  await put(root, 'etc/machine-id', '');
  await rm(join(root, 'var/lib/dbus/machine-id'), { force: true });
  await put(root, 'etc/network/interfaces', Interfaces);
  await mkdir(join(root, 'etc/network/interfaces.d'), { recursive: true });
  await put(root, 'etc/cloud/cloud.cfg.d/90-lifeboat.cfg', CloudConfig);
  await put(root, 'usr/local/sbin/lifeboat-guest-ready', ReadyScript, 0o755);
  await put(root, 'etc/systemd/system/lifeboat-guest-ready.service', ReadyUnit);
  await enable(root, 'lifeboat-guest-ready.service', 'multi-user.target');
  await lockRoot(root);
  // Downloaded packages and indexes are not part of the guest.
  await rm(join(root, 'var/cache/apt/archives'), { recursive: true, force: true });
  await mkdir(join(root, 'var/cache/apt/archives/partial'), { recursive: true });
  await rm(join(root, 'var/lib/apt/lists'), { recursive: true, force: true });
  await mkdir(join(root, 'var/lib/apt/lists/partial'), { recursive: true });
}

/** Root gets no password and no way to log in with one ('!' before the hash field). */
async function lockRoot(root: string): Promise<void> {
  const path = join(root, 'etc/shadow');
  const lines = (await readFile(path, 'utf8')).split('\n').map((l) => {
    if (!l.startsWith('root:')) return l;
    const f = l.split(':');
    f[1] = `!${(f[1] ?? '*').replace(/^!+/, '')}`;
    return f.join(':');
  });
  await writeFile(path, lines.join('\n'));
}
