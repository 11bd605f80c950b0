/** `--at` times: RFC 3339 date-times only, so an archived check is never run at a misread moment. */
import { CliError } from './io';

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;

/** Parse `text` (e.g. `2025-06-01T12:00:00Z`, `2025-06-01T14:00:00+02:00`); a usage error (exit 2) otherwise. */
export function parseRfc3339(text: string, flag: string): Date {
  const m = RFC3339.exec(text.trim());
  const bad = () => new CliError(`${flag} ${JSON.stringify(text.slice(0, 64))} is not an RFC 3339 time (e.g. 2025-06-01T12:00:00Z)`);
  if (!m) throw bad();
  const [, y, mo, d, h, mi, s] = m.map(Number);
  const date = new Date(text.trim().replace(' ', 'T'));
  // Date() rolls 2025-02-30 over to March: check the fields it was given survived unchanged.
  const probe = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  if (
    Number.isNaN(date.getTime()) || h > 23 || mi > 59 || s > 59 ||
    probe.getUTCFullYear() !== y || probe.getUTCMonth() !== mo - 1 || probe.getUTCDate() !== d
  ) {
    throw bad();
  }
  return date;
}
