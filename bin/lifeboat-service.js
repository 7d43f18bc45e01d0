#!/usr/bin/env node
// The bundle in dist/ (npm run build) when it is current, else the TypeScript sources through tsx.
import { launch } from '../shared/cli/launch.js';
await launch('lifeboat-service', new URL('../service/cli/main.ts', import.meta.url));
