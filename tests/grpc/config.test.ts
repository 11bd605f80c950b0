/** The server type and its port, as the reference takes them: one type per process, gRPC on 50000 unless Port says otherwise. */
import { loadServerConfig } from '../../src/server/config';

describe('server type settings', () => {
  it('http on 8080 by default; grpc on 50000 unless --port or Port says otherwise', () => {
    expect(loadServerConfig({}, {})).toMatchObject({ serverType: 'http', port: 8080, grpcHost: '127.0.0.1' });
    expect(loadServerConfig({ serverType: 'grpc' }, {})).toMatchObject({ serverType: 'grpc', port: 50000 });
    expect(loadServerConfig({ serverType: 'GRPC' }, { Port: '7000' })).toMatchObject({ serverType: 'grpc', port: 7000 });
    expect(loadServerConfig({ serverType: 'grpc', port: '7001' }, { Port: '7000' }).port).toBe(7001);
  });

  it('refuses another server type and an SKR_GRPC_HOST that is not an IP address', () => {
    expect(() => loadServerConfig({ serverType: 'websocket' }, {})).toThrow(/server type "websocket" is not http or grpc/);
    expect(() => loadServerConfig({ serverType: 'grpc' }, { SKR_GRPC_HOST: 'example.com' })).toThrow(/SKR_GRPC_HOST "example.com" is not an IP address/);
    expect(loadServerConfig({ serverType: 'grpc' }, { SKR_GRPC_HOST: '0.0.0.0' }).grpcHost).toBe('0.0.0.0');
  });
});
