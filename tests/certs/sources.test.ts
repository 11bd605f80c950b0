import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AmdKdsSource, kdsVcekUrl } from '../../src/certs/sources/amd-kds';
import { AzureCacheSource } from '../../src/certs/sources/azure-cache';
import { LocalThimSource } from '../../src/certs/sources/local-thim';
import { collateralSourceFromArgs } from '../../src/certs/sources/from-args';
import { chainToThim } from '../../src/certs/thim';
import { readVcekExtensions } from '../../src/certs/vcek';
import type { CollateralKey } from '../../src/certs/types';
import { ConfigError, UpstreamError } from '../../src/common/errors';
import { chainOf, makeVcek, testHierarchy } from './fixtures';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

type Route = (req: http.IncomingMessage, res: http.ServerResponse) => void;

async function serve(route: Route): Promise<{ base: string; host: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    route(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    seen,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

const h = testHierarchy();
const chipId = Buffer.from('ab'.repeat(64), 'hex');
const tcb = 0x7308000000000003n;
const vcek = makeVcek(h, { tcb, hwid: chipId });
const key: CollateralKey = { product: 'Milan', chipId, tcb };
const retry = { retries: 1, baseDelayMs: 1, maxDelayMs: 2, timeoutMs: 2000 };

describe('AMD KDS source', () => {
  it('builds the exact KDS URLs (Milan: full hwid, 2-digit SPLs; Turin: 8-byte hwid, fmcSPL)', () => {
    expect(kdsVcekUrl('https://kdsintf.amd.com/vcek/v1', 'Milan', chipId, tcb)).toBe(
      `https://kdsintf.amd.com/vcek/v1/Milan/${'ab'.repeat(64)}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115`,
    );
    const turinChip = Buffer.concat([Buffer.from('0011223344556677', 'hex'), Buffer.alloc(56)]);
    expect(kdsVcekUrl('https://kdsintf.amd.com/vcek/v1', 'Turin', turinChip, 0x4800000018040201n)).toBe(
      'https://kdsintf.amd.com/vcek/v1/Turin/0011223344556677?fmcSPL=01&blSPL=02&teeSPL=04&snpSPL=24&ucodeSPL=72',
    );
  });

  it('fetches DER VCEK + PEM cert_chain, converts to PEM, reads tcbm from the VCEK and max-age', async () => {
    const s = await serve((req, res) => {
      if (req.url === '/vcek/v1/Milan/cert_chain') {
        res.setHeader('content-type', 'application/x-pem-file');
        return res.end(h.askPem + h.arkPem);
      }
      if (req.url?.startsWith('/vcek/v1/Milan/')) {
        res.setHeader('content-type', 'application/pkix-cert');
        res.setHeader('cache-control', 'public, max-age=3600');
        return res.end(vcek.der);
      }
      res.statusCode = 404;
      res.end();
    });
    try {
      const src = new AmdKdsSource({ baseUrl: s.base, ...retry });
      const chain = await src.fetch(key);
      expect(chain.source).toBe('amd-kds');
      expect(chain.tcbm).toBe(tcb);
      expect(chain.cacheControlSeconds).toBe(3600);
      expect(chain.vcekPem).toBe(vcek.pem);
      expect(chain.chainPem).toBe(h.askPem + h.arkPem);
      const paths = s.seen.map((x) => x.url).sort();
      expect(paths).toEqual([`/vcek/v1/Milan/${'ab'.repeat(64)}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115`, '/vcek/v1/Milan/cert_chain'].sort());
      // The chain is memoised per product: a second VCEK fetch does not hit cert_chain again.
      await src.fetch({ ...key, tcb: 0x7308000000000004n }).catch(() => undefined);
      expect(s.seen.filter((x) => x.url.endsWith('cert_chain'))).toHaveLength(1);
    } finally {
      await s.close();
    }
  });

  it('turns a KDS 404 into UpstreamError naming the status, and garbage into ERR_UPSTREAM_FORMAT', async () => {
    const s = await serve((req, res) => {
      if (req.url?.endsWith('cert_chain')) return res.end(h.askPem + h.arkPem);
      if (req.url?.includes('Genoa')) return res.end('not a certificate');
      res.statusCode = 404;
      res.end();
    });
    try {
      await expect(new AmdKdsSource({ baseUrl: s.base, ...retry }).fetch(key)).rejects.toMatchObject({ upstream: 'amd-kds', upstreamStatus: 404 });
      await expect(new AmdKdsSource({ baseUrl: s.base, ...retry, product: 'Genoa' }).fetch(key)).rejects.toMatchObject({ code: 'ERR_UPSTREAM_FORMAT' });
    } finally {
      await s.close();
    }
  });
});

describe('local THIM source', () => {
  it('sends Metadata: true and parses the THIM JSON', async () => {
    const thim = { ...chainToThim(chainOf(h, vcek, tcb)), cacheControl: '86400' };
    const s = await serve((req, res) => {
      if (req.headers.metadata !== 'true' || req.url !== '/metadata/THIM/amd/certification') {
        res.statusCode = 400;
        return res.end();
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(thim));
    });
    try {
      const chain = await new LocalThimSource({ baseUrl: s.base, ...retry }).fetch(key);
      expect(chain).toMatchObject({ source: 'local-thim', tcbm: tcb, cacheControlSeconds: 86400 });
      expect(s.seen[0].headers.metadata).toBe('true');
      expect(s.seen[0].method).toBe('GET');
    } finally {
      await s.close();
    }
  });

  it('refuses a malformed THIM answer as the upstream’s fault', async () => {
    const s = await serve((_q, res) => res.end('{"vcekCert": 1}'));
    try {
      const p = new LocalThimSource({ baseUrl: s.base, ...retry }).fetch(key);
      await expect(p).rejects.toBeInstanceOf(UpstreamError);
      await expect(p).rejects.toMatchObject({ code: 'ERR_UPSTREAM_FORMAT', status: 502 });
    } finally {
      await s.close();
    }
  });
});

describe('Azure cache source', () => {
  it('uses the reference URL shape and accepts a PEM bundle or THIM JSON', async () => {
    let json = false;
    const s = await serve((_q, res) => {
      if (json) return res.end(JSON.stringify(chainToThim(chainOf(h, vcek, tcb))));
      res.end(vcek.pem + h.askPem + h.arkPem);
    });
    try {
      const src = new AzureCacheSource({ baseUrl: s.base, clientId: 'ConfidentialACI', ...retry });
      const a = await src.fetch(key);
      expect(s.seen[0].url).toBe(`/SevSnpVM/certificates/${'ab'.repeat(64)}/7308000000000003?api-version=2020-10-15-preview&clientId=ConfidentialACI`);
      expect(a).toMatchObject({ source: 'azure-cache', tcbm: tcb, vcekPem: vcek.pem, chainPem: h.askPem + h.arkPem });
      json = true;
      const b = await src.fetch({ ...key, tcb: 0x0300000000000001n });
      expect(s.seen[1].url).toBe(`/SevSnpVM/certificates/${'ab'.repeat(64)}/300000000000001?api-version=2020-10-15-preview&clientId=ConfidentialACI`);
      expect(b.tcbm).toBe(tcb);
    } finally {
      await s.close();
    }
  });
});

describe('collateralSourceFromArgs', () => {
  it('defaults to local THIM when certcache is absent', () => {
    const src = collateralSourceFromArgs(undefined);
    expect(src).toBeInstanceOf(LocalThimSource);
    expect((src as LocalThimSource).url).toBe('http://169.254.169.254/metadata/THIM/amd/certification');
  });

  it('reads LocalTHIM endpoints as the reference does (http:// + endpoint)', () => {
    const src = collateralSourceFromArgs({ endpoint_type: 'LocalTHIM', endpoint: '169.254.169.254/metadata/THIM/amd/certification' });
    expect((src as LocalThimSource).url).toBe('http://169.254.169.254/metadata/THIM/amd/certification');
  });

  it('reads AMD endpoints as https://{endpoint}/{tee_type}/...', () => {
    const src = collateralSourceFromArgs({ endpoint_type: 'AMD', endpoint: 'kdsintf.amd.com/vcek/v1', tee_type: 'Genoa' }) as AmdKdsSource;
    expect(src).toBeInstanceOf(AmdKdsSource);
    expect(src.vcekUrl(key)).toBe(`https://kdsintf.amd.com/vcek/v1/Genoa/${'ab'.repeat(64)}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115`);
    expect(src.chainUrl('Genoa')).toBe('https://kdsintf.amd.com/vcek/v1/Genoa/cert_chain');
    const dflt = collateralSourceFromArgs({ endpoint_type: 'AMD' }) as AmdKdsSource;
    expect(dflt.chainUrl('Milan')).toBe('https://kdsintf.amd.com/vcek/v1/Milan/cert_chain');
  });

  it('reads AzCache api_version/client_id as whole query terms or bare values', () => {
    const a = collateralSourceFromArgs({ endpoint_type: 'AzCache', endpoint: 'americas.test.acccache.azure.net', tee_type: 'SevSnpVM', api_version: 'api-version=2020-10-15-preview', client_id: 'clientId=ConfidentialACI' }) as AzureCacheSource;
    expect(a.url(key)).toBe(`https://americas.test.acccache.azure.net/SevSnpVM/certificates/${'ab'.repeat(64)}/7308000000000003?api-version=2020-10-15-preview&clientId=ConfidentialACI`);
    const b = collateralSourceFromArgs({ endpoint_type: 'AzCache', api_version: '2021-01-01' }) as AzureCacheSource;
    expect(b.url(key)).toBe(`https://global.acccache.azure.net/SevSnpVM/certificates/${'ab'.repeat(64)}/7308000000000003?api-version=2021-01-01`);
  });

  it('refuses unknown types, endpoints without a type and bad tee types', () => {
    expect(() => collateralSourceFromArgs({ endpoint_type: 'Intel', endpoint: 'x' })).toThrow(ConfigError);
    expect(() => collateralSourceFromArgs({ endpoint: 'kdsintf.amd.com/vcek/v1' })).toThrow(/without endpoint_type/);
    expect(() => collateralSourceFromArgs({ endpoint_type: 'AMD', tee_type: 'Naples' })).toThrow(ConfigError);
  });

  it('routes a scheme-less LocalTHIM endpoint to a loopback emulator over http', async () => {
    const s = await serve((_q, res) => res.end(JSON.stringify(chainToThim(chainOf(h, vcek, tcb)))));
    try {
      const src = collateralSourceFromArgs({ endpoint_type: 'LocalTHIM', endpoint: `${s.host}/metadata/THIM/amd/certification` }, retry);
      const chain = await src.fetch(key);
      expect(readVcekExtensions(chain.vcekPem).tcbRaw).toBe(tcb);
      expect(s.seen[0].headers.metadata).toBe('true');
    } finally {
      await s.close();
    }
  });
});
