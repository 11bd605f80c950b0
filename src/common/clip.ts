/**
 * Caps for text that came from outside (upstream bodies, caller input) before it is echoed into a
 * response or a log line: a hostile peer must not be able to size our answers or our logs.
 */

/** Longest piece of outside text quoted in a message. */
export const MAX_ECHO_CHARS = 200;

/** At most `max` characters of `s`, one line, marked when cut (so nobody mistakes it for the whole). */
export function clip(s: string, max: number = MAX_ECHO_CHARS): string {
  const head = s.length > max ? s.slice(0, max) : s;
  // eslint-disable-next-line no-control-regex -- control characters would split or forge log lines
  const clean = head.replace(/[\u0000-\u001f\u007f]/g, ' ');
  return s.length > max ? `${clean}…[cut, ${s.length} chars]` : clean;
}

/** `clip` then JSON-quote: for naming a caller's value in a message. */
export function quote(s: string, max: number = MAX_ECHO_CHARS): string {
  return s.length > max ? `${JSON.stringify(s.slice(0, max))}…[cut, ${s.length} chars]` : JSON.stringify(s);
}
