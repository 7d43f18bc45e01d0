/**
 * The portal's only static files, served from our own origin: htmx and uPlot (from node_modules, read
 * once), the style sheet and the VM page's chart script. No CDN, no web fonts (the system's sans-serif), no analytics.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { Hono } from 'hono';

/** Where apiApp mounts the portal. */
export const MountPath = '/portal';
export const AssetPaths = {
  htmx: '/portal/assets/htmx.min.js', css: '/portal/assets/portal.css',
  uplot: '/portal/assets/uplot.min.js', uplotCss: '/portal/assets/uplot.min.css', historyChart: '/portal/assets/history-chart.js',
} as const;

// Contrast: text #1a1a1a on #fff (17:1), links #0645ad (8.6:1), badges dark text on light tints.
const Css = `
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;background:#fff}
a{color:#0645ad}
a:focus,button:focus,input:focus,select:focus{outline:3px solid #1f6feb;outline-offset:2px}
.skip{position:absolute;left:-9999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;padding:.5rem 1rem;border-bottom:1px solid #ccc;background:#f4f6f8}
header nav{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
header form{margin:0;display:flex;gap:.25rem;align-items:center}
.brand{font-weight:700;text-decoration:none;color:#1a1a1a}
main{padding:1rem;max-width:72rem;margin:0 auto}
h1{font-size:1.5rem;margin:.5rem 0 1rem}
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #ddd;white-space:nowrap}
th{background:#f4f6f8}
.badge{display:inline-block;padding:0 .5rem;border-radius:1rem;font-weight:600}
.health-normal{background:#dff3e4;color:#0b4d1f}
.health-warning{background:#fff1c2;color:#5c4300}
.health-critical{background:#fde0e0;color:#7a0b0b}
form.stack{display:grid;gap:.75rem;max-width:24rem}
form.stack label{font-weight:600}
input,select,button{font:inherit;padding:.4rem .6rem}
button{cursor:pointer;border:1px solid #555;border-radius:.25rem;background:#fff;color:#1a1a1a}
button.primary{background:#0645ad;color:#fff;border-color:#0645ad}
.error{color:#7a0b0b;background:#fde0e0;padding:.5rem;border-radius:.25rem}
.note{color:#444}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}.facts dt{font-weight:600}.facts dd{margin:0}
.nic-section{border-top:1px solid #ddd;margin-top:1rem}
form.nic{display:grid;gap:.5rem;max-width:40rem}
fieldset{display:grid;gap:.25rem;border:1px solid #ccc;border-radius:.25rem}
textarea{font:inherit;padding:.4rem .6rem}
code.wrap{word-break:break-all}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
td.actions{display:flex;flex-wrap:wrap;gap:.25rem}td.actions form{margin:0;display:flex;gap:.25rem;align-items:center}
label.check{display:block;font-weight:400}
form.wide{max-width:48rem}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;margin:1rem 0}.actions form{margin:0}
img.shot{max-width:100%;height:auto;border:1px solid #ccc}
td.wrap{white-space:normal}
.chart{min-height:280px;max-width:60rem}
nav.sections{display:flex;flex-wrap:wrap;gap:.25rem 1rem;padding:.25rem 1rem;border-bottom:1px solid #ddd}
@media print{header,nav.sections,.no-print,.skip,form{display:none}main{max-width:none}}
@media (max-width:40rem){main{padding:.5rem}th,td{padding:.3rem}}
`;

// The VM page's chart (vm.tsx): draws each element's data-history (replication/history.ts) with uPlot,
// lag as a line on the left scale and bytes shipped as bars on the right. The table beside it carries
// the same figures for readers without scripts or sight of the chart.
const HistoryChart = `(function () {
  function bytes(n) { var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (i ? n.toFixed(1) : n) + ' ' + u[i]; }
  function draw(el) {
    var h = JSON.parse(el.getAttribute('data-history'));
    var opts = {
      width: Math.max(320, el.clientWidth), height: 240,
      scales: { x: { time: true }, lag: { auto: true, range: function (u, lo, hi) { return [0, Math.max(hi || 0, 1)]; } }, bytes: { auto: true, range: function (u, lo, hi) { return [0, Math.max(hi || 0, 1)]; } } },
      series: [
        {},
        { label: 'Lag', scale: 'lag', stroke: '#0645ad', width: 2, points: { show: true, size: 5, fill: '#0645ad' }, value: function (u, v) { return v == null ? 'no cycle' : v + ' s'; } },
        { label: 'Shipped', scale: 'bytes', stroke: '#8a4500', fill: 'rgba(138,69,0,0.25)', paths: uPlot.paths.bars({ size: [0.8, 64] }), value: function (u, v) { return v == null ? '' : bytes(v); } },
      ],
      axes: [{}, { scale: 'lag', label: 'Lag (s)' }, { scale: 'bytes', side: 1, label: 'Shipped', size: 80, labelSize: 20, grid: { show: false }, values: function (u, vs) { return vs.map(bytes); } }],
    };
    el.textContent = '';
    new uPlot(opts, [h.t, h.lagSeconds, h.bytes], el);
    el.setAttribute('data-drawn', String(h.t.length));
  }
  document.querySelectorAll('[data-history]').forEach(draw);
})();
`;

/** Adds the asset routes to the portal's app (mounted at MountPath); each answer is cacheable and names its content's hash as ETag. */
export function assetRoutes(app: Hono): void {
  const js = 'text/javascript; charset=utf-8';
  const css = 'text/css; charset=utf-8';
  const served = (path: string, type: string, body: string, maxAge: number) => {
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 16)}"`;
    app.get(path.slice(MountPath.length), (c) => c.body(body, 200, { 'content-type': type, 'cache-control': `public, max-age=${maxAge}`, etag }));
  };
  const packaged = (path: string, type: string, file: string) => {
    let body: Promise<string> | undefined;
    const load = () => (body ??= readFile(createRequire(import.meta.url).resolve(file), 'utf8'));
    app.get(path.slice(MountPath.length), async (c) => c.body(await load(), 200, { 'content-type': type, 'cache-control': 'public, max-age=86400' }));
  };
  served(AssetPaths.css, css, Css, 3600);
  served(AssetPaths.historyChart, js, HistoryChart, 3600);
  packaged(AssetPaths.htmx, js, 'htmx.org/dist/htmx.min.js');
  packaged(AssetPaths.uplot, js, 'uplot/dist/uPlot.iife.min.js');
  packaged(AssetPaths.uplotCss, css, 'uplot/dist/uPlot.min.css');
}
