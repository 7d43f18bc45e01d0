#!/usr/bin/env node
// Runs the TypeScript sources through tsx's loader, so the command works right after `npm ci`.
import { register } from 'tsx/esm/api';
register();
await import('../agent/cli/main.ts');
