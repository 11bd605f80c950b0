/**
 * The server side of swtpm's raw command protocol: a byte stream of TPM commands, each framed by the
 * size field of its own header. Used where we stand in for a TPM on a TCP port (the simulated paravisor,
 * test proxies); bounded like the client side (transport.ts), since what arrives is hostile input.
 */
import type { Socket } from 'node:net';
import { HEADER_BYTES, MAX_RESPONSE_BYTES } from './transport';

/**
 * Splits what arrives on `socket` into TPM commands and hands them to `onCommand` one at a time, in
 * order, the next not before the previous one's promise has settled. A command whose size field is
 * outside HEADER_BYTES..MAX_RESPONSE_BYTES, more than 2 * MAX_RESPONSE_BYTES waiting unread, or
 * `onCommand` throwing destroys the connection. `onCommand` answers false to read no further commands
 * from this connection (what arrives after is discarded): it has ended the connection or parked it.
 */
export function readTpmCommands(socket: Socket, onCommand: (command: Buffer) => Promise<boolean>): void {
  let buf = Buffer.alloc(0);
  let busy = false;
  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      while (buf.length >= HEADER_BYTES) {
        const size = buf.readUInt32BE(2);
        if (size < HEADER_BYTES || size > MAX_RESPONSE_BYTES) return void socket.destroy();
        if (buf.length < size) break;
        const command = Buffer.from(buf.subarray(0, size));
        buf = buf.subarray(size);
        if (!(await onCommand(command))) return void socket.removeListener('data', onData);
      }
    } catch {
      socket.destroy();
    } finally {
      busy = false;
    }
    // No second pump here: bytes that arrived while busy were seen by the loop's own check (there is no
    // await between it and `busy = false`), and pumping again after a partial command recurses without end.
  };
  const onData = (d: Buffer): void => {
    buf = Buffer.concat([buf, d]);
    if (buf.length > MAX_RESPONSE_BYTES * 2) return void socket.destroy();
    void pump();
  };
  socket.on('data', onData);
}
