/**
 * The API reference page (`/api-docs`): Swagger UI from npm (swagger-ui-dist), served from our own
 * origin with the portal's security headers and Content-Security-Policy (scripts, styles and requests from this origin
 * only, no inline script or style, no framing); it reads /v1/openapi.json. The page needs no
 * credential (the document holds no secret); "Try it out" calls the API with the bearer the reader
 * gives under Authorize. Swagger UI's files are read once, on first use.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { Env, Hono } from 'hono';
import { securityHeaders } from '../portal/security.js';

export const ReferencePath = '/api-docs';
export const ReferenceAssets = {
  bundle: `${ReferencePath}/assets/swagger-ui-bundle.js`, css: `${ReferencePath}/assets/swagger-ui.css`, init: `${ReferencePath}/assets/init.js`,
  icon: `${ReferencePath}/assets/favicon-32x32.png`,
} as const;

const Page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lifeboat operator API reference</title>
<link rel="stylesheet" href="${ReferenceAssets.css}">
<link rel="icon" type="image/png" href="${ReferenceAssets.icon}">
</head>
<body>
<main id="reference"><noscript>The reference needs JavaScript; the document itself is <a href="/v1/openapi.json">/v1/openapi.json</a>.</noscript></main>
<script src="${ReferenceAssets.bundle}"></script>
<script src="${ReferenceAssets.init}"></script>
</body>
</html>
`;

/** Swagger UI started on our document (a file of its own: the CSP allows no inline script). */
const Init = `window.ui = SwaggerUIBundle({ url: '/v1/openapi.json', dom_id: '#reference', deepLinking: true, tryItOutEnabled: false, validatorUrl: null });\n`;

/** Adds the page and its four files to the API's app. */
export function referenceRoutes<E extends Env>(app: Hono<E>): void {
  const files = new Map<string, Promise<Buffer>>();
  const dist = async (name: string) => {
    let f = files.get(name);
    if (!f) files.set(name, (f = readFile(createRequire(import.meta.url).resolve(`swagger-ui-dist/${name}`))));
    return new Uint8Array(await f);
  };
  app.use(ReferencePath, securityHeaders());
  app.use(`${ReferencePath}/*`, securityHeaders());
  app.get(ReferencePath, (c) => c.html(Page, 200, { 'cache-control': 'no-cache' }));
  app.get(ReferenceAssets.init, (c) => c.body(Init, 200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-cache' }));
  app.get(ReferenceAssets.bundle, async (c) => c.body(await dist('swagger-ui-bundle.js'), 200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'public, max-age=86400' }));
  app.get(ReferenceAssets.css, async (c) => c.body(await dist('swagger-ui.css'), 200, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'public, max-age=86400' }));
  app.get(ReferenceAssets.icon, async (c) => c.body(await dist('favicon-32x32.png'), 200, { 'content-type': 'image/png', 'cache-control': 'public, max-age=86400' }));
}
