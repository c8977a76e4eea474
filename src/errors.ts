/** SQLSTATE codes scopegate sends itself. Names follow PostgreSQL's errcodes.txt. */
export const SQLSTATE = {
  PROTOCOL_VIOLATION: '08P01',
  CONNECTION_FAILURE: '08006',
  CONNECTION_EXCEPTION: '08000',
  INVALID_AUTHORIZATION: '28000',
  INVALID_PASSWORD: '28P01',
  INSUFFICIENT_PRIVILEGE: '42501',
  TOO_MANY_CONNECTIONS: '53300',
  FEATURE_NOT_SUPPORTED: '0A000',
  ADMIN_SHUTDOWN: '57P01',
  CRASH_SHUTDOWN: '57P02',
  CANNOT_CONNECT_NOW: '57P03',
  QUERY_CANCELED: '57014',
  INVALID_CATALOG_NAME: '3D000',
  IDLE_IN_TRANSACTION_TIMEOUT: '25P03',
  INTERNAL_ERROR: 'XX000',
  SYNTAX_ERROR: '42601',
  INVALID_PARAMETER_VALUE: '22023',
  UNDEFINED_OBJECT: '42704',
  CANT_CHANGE_RUNTIME_PARAM: '55P02',
  DUPLICATE_PREPARED_STATEMENT: '42P05',
  INVALID_CURSOR_NAME: '34000',
  INVALID_SQL_STATEMENT_NAME: '26000',
  CONFIG_FILE_ERROR: 'F0000',
  PROGRAM_LIMIT_EXCEEDED: '54000',
  OUT_OF_MEMORY: '53200',
  STATEMENT_TOO_COMPLEX: '54001',
} as const;

export type SqlState = (typeof SQLSTATE)[keyof typeof SQLSTATE] | string;

export type Severity = 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE';

/** An error that reaches a client as an ErrorResponse. */
export class SqlError extends Error {
  readonly code: SqlState;
  readonly severity: Severity;
  readonly detail: string | undefined;
  readonly hint: string | undefined;
  constructor(code: SqlState, message: string, opts: { severity?: Severity; detail?: string; hint?: string } = {}) {
    super(message);
    this.name = 'SqlError';
    this.code = code;
    this.severity = opts.severity ?? 'ERROR';
    this.detail = opts.detail;
    this.hint = opts.hint;
  }
}

/** A problem in the config or policy file; `key` is the dotted path of the offending key. */
export class ConfigError extends Error {
  readonly key: string;
  constructor(key: string, problem: string) {
    super(`${key}: ${problem}`);
    this.name = 'ConfigError';
    this.key = key;
  }
}
