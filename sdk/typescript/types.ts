/** Request and reply shapes of the syscalls (docs/protocol.md §5). */

export type Target = number | string;
export type Scope = 'global' | 'agent' | 'session';
export type AgentState = 'STARTING' | 'RUNNING' | 'PAUSED' | 'STOPPING' | 'BACKOFF' | 'STOPPED' | 'FAILED';

export interface HelloReply {
  success: true;
  protocol_version: number;
  kernel_version: string;
  agent_id: number;
  role: 'agent' | 'operator' | 'client';
  name: string;
  features: Record<string, unknown>;
  sandbox: Record<string, unknown>;
  data_dir?: string;
  agent_socket?: string;
}

export interface SpawnRequest {
  script?: string;
  command?: string[];
  name?: string;
  args?: string[];
  env?: Record<string, string>;
  cwd?: string;
  restart_policy?: 'never' | 'on-failure' | 'always';
  max_restarts?: number;
  restart_window?: number;
  backoff_initial_ms?: number;
  backoff_multiplier?: number;
  backoff_max_ms?: number;
  min_uptime_ms?: number;
  watchdog_ms?: number;
  permissions?: Record<string, unknown> | string;
  sandboxed?: boolean;
  network?: boolean;
  limits?: {
    memory?: number;
    max_pids?: number;
    cpu_quota?: number;
    cpu_period?: number;
    cpu_shares?: number;
  };
}

export interface IsolationReport {
  fully_isolated: boolean;
  namespaces: Record<string, boolean>;
  cgroups: Record<string, boolean | string>;
  degraded_reason?: string;
}

export interface SpawnReply {
  success: true;
  id: number;
  name: string;
  pid: number;
  status: 'running';
  restart_policy: string;
  isolation: IsolationReport;
}

export interface KillReply {
  success: true;
  killed: boolean;
  agent_id: number;
}

export interface AgentInfo {
  id: number;
  name: string;
  pid: number;
  state: AgentState;
  running: boolean;
  restarts: number;
  uptime_ms: number;
  restart_policy: string;
  parent_id: number;
  exit_code: number | null;
  exit_signal: string | null;
  exit_reason: string | null;
  mailbox: number;
  log_file?: string;
}

export interface Message {
  from: number;
  from_name: string;
  message: unknown;
  age_ms: number;
  seq: number;
}

export interface RecvReply {
  success: true;
  messages: Message[];
  count: number;
}

export interface FetchReply {
  success: true;
  exists: boolean;
  value: unknown;
  scope?: Scope;
}

export interface KernelEvent {
  type: string;
  data: Record<string, unknown>;
  source_agent_id: number;
  timestamp: number;
}

export interface PollReply {
  success: true;
  events: KernelEvent[];
  count: number;
  dropped: number;
}
