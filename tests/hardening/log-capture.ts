/** A real winston logger (with the sidecar's redaction) whose output lines are kept in memory. */
import Transport from 'winston-transport';
import { createLogger, type Logger } from '../../src/server/logger';

class MemoryTransport extends Transport {
  constructor(private readonly lines: string[]) {
    super();
  }
  override log(info: unknown, next: () => void): void {
    // The formatted line as a file or console transport would write it.
    const sym = Symbol.for('message');
    const line = (info as Record<symbol, unknown>)[sym];
    this.lines.push(typeof line === 'string' ? line : JSON.stringify(info));
    next();
  }
}

export function capturingLogger(level: 'debug' | 'info' = 'debug'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger({ level, console: false, transports: [new MemoryTransport(lines)] });
  return { logger, lines };
}
