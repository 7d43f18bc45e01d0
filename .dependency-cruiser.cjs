/** Dependency rules: shared/ points nowhere but inward, and nothing is circular. */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'a cycle through type-only imports is no runtime cycle',
      from: {}, to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } } },
    { name: 'shared-is-inward', severity: 'error', comment: 'shared/ never imports agent/ or service/',
      from: { path: '^shared/' }, to: { path: '^(agent|service)/' } },
    { name: 'agent-not-service', severity: 'error', comment: 'the agent and the service only meet in shared/',
      from: { path: '^agent/' }, to: { path: '^service/' } },
    { name: 'service-not-agent', severity: 'error',
      from: { path: '^service/' }, to: { path: '^agent/' } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
