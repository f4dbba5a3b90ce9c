/** The clove.yaml loader (docs/compose.md): a pure module the CLI's project commands build on. */
export {
  COMPOSE_FILES,
  ComposeError,
  composeLabels,
  fieldName,
  findComposeFile,
  loadCompose,
  replicaNames,
  type Healthcheck,
  type LoadOptions,
  type Placement,
  type Project,
  type QuotaPolicy,
  type QuotaSpec,
  type Quotas,
  type Service,
  type SpawnArgsBase,
} from './load.js';
export { ENTRY_PATTERN, ENTRY_RUNNER, defaultPython, entryProblem, entrySpawn } from './entry.js';
export { COMPOSE_SCHEMA, PERMISSION_LEVELS, QUOTA_UNITS, SERVICE_NAME_PATTERN } from './schema.js';
export { DURATION_PATTERN, SIZE_PATTERN, parseDuration, parseSize } from './units.js';
