/**
 * winston logger with a redaction pass: whatever a caller hands it, JWTs, bearer tokens and
 * key material never reach the output.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import winston from 'winston';
import { ConfigError } from '../common/errors';
import { clip } from '../common/clip';
import { describeErrorChain, redactText } from '../common/redact';

const SECRET_KEYS = /^(access_?token|token|authorization|bearer|key|k|d|p|q|dp|dq|qi|key_hsm|private_?key|secret|target|value|ciphertext)$/i;
/** Longest string value in a log line, and most array items: no field can make a line huge. */
export const MAX_LOG_STRING_CHARS = 500;
const MAX_LOG_ARRAY_ITEMS = 32;

/** Redact secrets from a string (see common/redact.ts): a JWT keeps its header (alg, kid) and loses payload and signature. */
export function redactString(s: string): string {
  return redactText(s);
}

/** Deep copy with secret-named fields replaced and strings scrubbed. */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 8) return '<depth>';
  if (typeof value === 'string') return clip(redactString(value), MAX_LOG_STRING_CHARS);
  if (Array.isArray(value)) {
    const items = value.slice(0, MAX_LOG_ARRAY_ITEMS).map((v) => redact(v, depth + 1));
    return value.length > MAX_LOG_ARRAY_ITEMS ? [...items, `…[cut, ${value.length} items]`] : items;
  }
  if (value instanceof Error) return { name: value.name, message: clip(describeErrorChain(value), MAX_LOG_STRING_CHARS), code: (value as { code?: unknown }).code };
  if (Buffer.isBuffer(value)) return `<${value.length} bytes>`;
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEYS.test(k) ? '<redacted>' : redact(v, depth + 1);
    return out;
  }
  return value;
}

const redactFormat = winston.format((info) => {
  const cleaned = redact({ ...info }) as Record<string, unknown>;
  for (const k of Object.keys(cleaned)) (info as Record<string, unknown>)[k] = cleaned[k];
  return info;
});

export type Logger = winston.Logger;

/** Winston levels; config.ts maps the reference's logrus names onto them. */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'silly';

export interface LoggerOptions {
  level?: LogLevel;
  file?: string;
  silent?: boolean;
  json?: boolean;
  /** Extra transports (tests capture output through one); they see the redacted lines. */
  transports?: winston.transport[];
  /** Default true: log to stderr. */
  console?: boolean;
}

/**
 * winston opens its file later and drops an open failure without a word: prove at start-up that the
 * file can be appended to (creating its directory, as winston would), or fail naming path and reason.
 */
export function checkLogFile(file: string): void {
  try {
    if (!fs.existsSync(path.dirname(file))) fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.closeSync(fs.openSync(file, 'a'));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError(`cannot write log file ${file}: ${err.code ?? 'error'} on ${err.syscall ?? 'open'} ${err.path ?? file}`, e);
  }
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  if (opts.file) checkLogFile(opts.file);
  const transports: winston.transport[] = [
    ...(opts.console === false ? [] : [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug', 'silly'] })]),
    ...(opts.transports ?? []),
  ];
  if (opts.file) transports.push(new winston.transports.File({ filename: opts.file }));
  return winston.createLogger({
    level: opts.level ?? 'info',
    silent: opts.silent ?? false,
    format: winston.format.combine(
      redactFormat(),
      winston.format.timestamp(),
      opts.json === false ? winston.format.simple() : winston.format.json(),
    ),
    transports,
  });
}
