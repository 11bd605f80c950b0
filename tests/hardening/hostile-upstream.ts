/**
 * A hostile upstream on loopback: a raw TCP server (optionally TLS with the local CA) that answers
 * each request with the next of a list of malformed answers, written byte by byte as a broken or
 * malicious server would. Every answer closes its connection, so one request = one case.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

export interface HostileCase {
  name: string;
  /** Write the answer on the TLS (or plain) socket; may keep writing until the peer goes away. */
  answer(sock: net.Socket): void;
  /** Act on the raw TCP socket instead, before any TLS (for TLS-level garbage). */
  raw?: boolean;
}

const crlf = (lines: string[], body = '') => lines.join('\r\n') + '\r\n\r\n' + body;

/** Write `text` then close. */
const send = (text: string | Buffer) => (sock: net.Socket) => {
  sock.end(text);
};

/** Write the head, then body chunks for as long as the peer reads (never ends on its own). */
const endless = (head: string, chunk: Buffer) => (sock: net.Socket) => {
  sock.write(head);
  const pump = () => {
    while (!sock.destroyed && sock.write(chunk)) {
      /* fill the socket buffer */
    }
    if (!sock.destroyed) sock.once('drain', pump);
  };
  sock.on('error', () => undefined);
  pump();
};

const MB = Buffer.alloc(64 * 1024, 'a');

/** ≥ 30 malformed answers shared by every upstream kind; `json` is a kind-specific well-formed-but-wrong 200 body. */
export function hostileCases(json: string): HostileCase[] {
  const cases: HostileCase[] = [
    { name: '205 with a body', answer: send(crlf(['HTTP/1.1 205 Reset Content', 'Content-Length: 5', 'Connection: close'], 'hello')) },
    { name: '999 Weird', answer: send(crlf(['HTTP/1.1 999 Weird', 'Content-Length: 2', 'Connection: close'], '{}')) },
    { name: 'control bytes in status text', answer: send(crlf(['HTTP/1.1 200 O\u0001K\u0007', 'Content-Length: 2', 'Connection: close'], '{}')) },
    { name: 'status 099', answer: send(crlf(['HTTP/1.1 099 Low', 'Content-Length: 0'])) },
    { name: 'two-digit status', answer: send(crlf(['HTTP/1.1 20 Short', 'Content-Length: 0'])) },
    { name: 'HTTP/2.0 status line', answer: send(crlf(['HTTP/2.0 200 OK', 'Content-Length: 2'], '{}')) },
    { name: 'not HTTP at all', answer: send('SSH-2.0-OpenSSH_9.6\r\n\r\n') },
    { name: 'empty answer', answer: send('') },
    { name: 'header without colon', answer: send(crlf(['HTTP/1.1 200 OK', 'NoColonHere', 'Content-Length: 2'], '{}')) },
    { name: 'NUL in a header value', answer: send(crlf(['HTTP/1.1 200 OK', 'X-Bad: a\u0000b', 'Content-Length: 2'], '{}')) },
    { name: 'conflicting Content-Length', answer: send(crlf(['HTTP/1.1 200 OK', 'Content-Length: 2', 'Content-Length: 40'], '{}')) },
    { name: 'negative Content-Length', answer: send(crlf(['HTTP/1.1 200 OK', 'Content-Length: -1'], '{}')) },
    { name: 'non-numeric Content-Length', answer: send(crlf(['HTTP/1.1 200 OK', 'Content-Length: lots'], '{}')) },
    { name: 'chunked and Content-Length', answer: send(crlf(['HTTP/1.1 200 OK', 'Transfer-Encoding: chunked', 'Content-Length: 2'], '2\r\n{}\r\n0\r\n\r\n')) },
    { name: 'bad chunk size', answer: send(crlf(['HTTP/1.1 200 OK', 'Transfer-Encoding: chunked'], 'zz\r\n{}\r\n0\r\n\r\n')) },
    { name: 'chunk size overflow', answer: send(crlf(['HTTP/1.1 200 OK', 'Transfer-Encoding: chunked'], 'ffffffffffffffffffff\r\n{}\r\n')) },
    { name: 'chunked body cut off', answer: send(crlf(['HTTP/1.1 200 OK', 'Transfer-Encoding: chunked'], '5\r\n{"tok\r\n')) },
    { name: 'Content-Length longer than the body', answer: send(crlf(['HTTP/1.1 200 OK', 'Content-Length: 100'], '{"token":')) },
    { name: '100 MB declared, 1.5 MB sent', answer: (s) => { s.write(crlf(['HTTP/1.1 200 OK', 'Content-Length: 104857600'])); for (let i = 0; i < 24; i++) s.write(MB); s.end(); } },
    { name: 'endless chunked body', answer: endless(crlf(['HTTP/1.1 200 OK', 'Transfer-Encoding: chunked']), Buffer.from(`10000\r\n${'a'.repeat(0x10000)}\r\n`)) },
    { name: 'endless close-delimited body', answer: endless(crlf(['HTTP/1.1 200 OK', 'Connection: close']), MB) },
    { name: 'endless 500 error body', answer: endless(crlf(['HTTP/1.1 500 Internal Server Error', 'Connection: close']), MB) },
    { name: '2 MB body with its length', answer: send(Buffer.concat([Buffer.from(crlf(['HTTP/1.1 200 OK', `Content-Length: ${2 * 1024 * 1024}`, 'Connection: close'])), Buffer.alloc(2 * 1024 * 1024, '[')])) },
    { name: 'invalid UTF-8 body', answer: send(Buffer.concat([Buffer.from(crlf(['HTTP/1.1 200 OK', 'Content-Type: application/json', 'Content-Length: 12', 'Connection: close'])), Buffer.from('{"token":"\xff\xfe"}', 'latin1').subarray(0, 12)])) },
    { name: 'truncated JSON', answer: send(crlf(['HTTP/1.1 200 OK', 'Content-Type: application/json', 'Content-Length: 10', 'Connection: close'], '{"token":"')) },
    { name: 'deeply nested JSON', answer: send(crlf(['HTTP/1.1 200 OK', 'Content-Type: application/json', 'Content-Length: 20000', 'Connection: close'], '['.repeat(10000) + ']'.repeat(10000))) },
    { name: 'JSON null', answer: send(crlf(['HTTP/1.1 200 OK', 'Content-Type: application/json', 'Content-Length: 4', 'Connection: close'], 'null')) },
    { name: 'kind-specific wrong JSON', answer: send(crlf(['HTTP/1.1 200 OK', 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(json)}`, 'Connection: close'], json)) },
    { name: 'gzip label on plain bytes', answer: send(crlf(['HTTP/1.1 200 OK', 'Content-Encoding: gzip', 'Content-Length: 8', 'Connection: close'], 'notgzip!')) },
    { name: '64 KB header', answer: send(crlf(['HTTP/1.1 200 OK', `X-Big: ${'b'.repeat(64 * 1024)}`, 'Content-Length: 2'], '{}')) },
    { name: '5000 headers', answer: send(crlf(['HTTP/1.1 200 OK', ...Array.from({ length: 5000 }, (_, i) => `X-H${i}: v`), 'Content-Length: 2'], '{}')) },
    { name: 'LF-only line ends with a bad status', answer: send('HTTP/1.1 777 LF\n\nxx') },
    { name: '100 Continue then 999', answer: send('HTTP/1.1 100 Continue\r\n\r\n' + crlf(['HTTP/1.1 999 After', 'Content-Length: 0'])) },
    { name: 'redirect to plain http', answer: send(crlf(['HTTP/1.1 302 Found', 'Location: http://127.0.0.1:9/elsewhere', 'Content-Length: 0', 'Connection: close'])) },
    { name: 'reset mid-body', answer: (s) => { s.write(crlf(['HTTP/1.1 200 OK', 'Content-Length: 50'], '{"tok')); setImmediate(() => s.destroy()); } },
    { name: 'plain text on the TLS port', raw: true, answer: send(crlf(['HTTP/1.1 200 OK', 'Content-Length: 2'], '{}')) },
    { name: 'connection dropped before TLS', raw: true, answer: (s) => s.destroy() },
  ];
  return cases;
}

export interface HostileServer {
  /** `127.0.0.1:port` */
  endpoint: string;
  url: string;
  /** How often each case was served, by name. */
  served: Map<string, number>;
  /** Per request: whether it carried an Authorization header (the SDK's challenge probe does not). */
  authorized: boolean[];
  cases: HostileCase[];
  close(): Promise<void>;
}

/**
 * Serve `cases` round-robin, one per connection. `tlsOptions` makes it an HTTPS-shaped server (raw
 * cases skip TLS); without it, plain HTTP. The request is read up to its head before answering.
 */
export async function startHostileServer(cases: HostileCase[], tlsOptions?: { key: string; cert: string }): Promise<HostileServer> {
  let next = 0;
  const served = new Map<string, number>();
  const authorized: boolean[] = [];
  const sockets = new Set<net.Socket>();
  const secureContext = tlsOptions ? tls.createSecureContext(tlsOptions) : undefined;
  // A case is taken when a request arrives (not per connection), so a connection that sends nothing skips none.
  const take = (): HostileCase => {
    const c = cases[next++ % cases.length];
    served.set(c.name, (served.get(c.name) ?? 0) + 1);
    return c;
  };
  const answerAfterHead = (sock: net.Socket, pick: () => HostileCase) => {
    let head = '';
    const onData = (d: Buffer) => {
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n') || head.length > 65536) {
        authorized.push(/\r\nauthorization:/i.test(head));
        sock.off('data', onData);
        sock.resume();
        pick().answer(sock);
      }
    };
    sock.on('data', onData);
  };
  const server = net.createServer((raw) => {
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
    raw.on('error', () => undefined);
    if (!secureContext) return answerAfterHead(raw, take);
    // TLS: the first bytes (a ClientHello) decide whether the next case is a raw one.
    raw.once('readable', () => {
      const peeked = cases[next % cases.length];
      if (peeked.raw) return take().answer(raw);
      const sock = new tls.TLSSocket(raw, { isServer: true, secureContext });
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
      sock.on('error', () => undefined);
      answerAfterHead(sock, () => {
        const c = take();
        // A raw case on an established TLS connection: its bytes go under TLS, as garbage records.
        return c.raw ? { name: c.name, answer: () => c.answer(raw) } : c;
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  return {
    endpoint: `127.0.0.1:${port}`,
    url: `${secureContext ? 'https' : 'http'}://127.0.0.1:${port}`,
    served,
    authorized,
    cases,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A vault that only ever answers the SDK's unauthenticated probe with a well-formed 401 challenge. */
export async function startChallengeVault(tlsOptions: { key: string; cert: string }): Promise<HostileServer> {
  const challenge = crlf([
    'HTTP/1.1 401 Unauthorized',
    'WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"',
    'Content-Length: 0',
    'Connection: close',
  ]);
  return startHostileServer([{ name: 'challenge', answer: send(challenge) }], tlsOptions);
}
