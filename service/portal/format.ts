/** How the portal writes sizes, ages and states for people. */

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** "42 s", "5 min", "3 h 10 min", "2 d"; "never" for null. */
export function age(iso: string | null, now = new Date()): string {
  if (iso === null) return 'never';
  const s = Math.max(0, Math.round((now.getTime() - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d`;
}

/** Health as Hyper-V names it. */
export function healthLabel(h: 'normal' | 'warning' | 'critical'): string {
  return h === 'normal' ? 'Normal' : h === 'warning' ? 'Warning' : 'Critical';
}

export function stateLabel(state: string): string {
  return state.replaceAll('_', ' ');
}

/** A UTC time as "2026-12-07 21:04:05 UTC". */
export function when(iso: string | null): string {
  return iso === null ? '—' : `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;
}
