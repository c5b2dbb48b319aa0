// How specgen.mode "auto" reads the kernel's findings and picks a server (src/discover.ts),
// without a server: fake probes. jupyter.test.ts runs the real snippet in a real kernel.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { chooseServer, FINDINGS_MARKER, findServer, IKernelFindings, IProbe, parseFindings, relativeTo } from '../src/discover';

const stdout = (text: string) => ({ items: [{ mime: 'application/vnd.code.notebook.stdout', data: new TextEncoder().encode(text) }] });

const FOUND = {
  kernel: 'k-1',
  cwd: '/home/me/project/sub',
  error: '',
  servers: [
    { url: 'http://127.0.0.1:8888/', token: 'tok-a', root_dir: '/home/me' },
    { url: 'http://127.0.0.1:8889/', token: 'tok-b', root_dir: '/home/me/project' },
    { url: 'http://127.0.0.1:8890/', token: 'tok-c', root_dir: '/' }
  ]
};

/** Probes answering from a table: url → what the server says. */
const probes = (table: Record<string, IProbe>) => async (url: string) => table[url] ?? { specgen: false, kernels: [] };

test('the findings line is read from stdout split across outputs, among other text; without it, none', () => {
  const line = FINDINGS_MARKER + JSON.stringify(FOUND);
  const found = parseFindings([stdout('hello\n' + line.slice(0, 20)), stdout(line.slice(20) + '\n'), { items: [{ mime: 'image/png', data: new Uint8Array([1]) }] }]);
  assert.ok(found);
  assert.equal(found.kernelId, 'k-1');
  assert.deepEqual(found.servers.map(s => [s.url, s.token, s.rootDir]), [
    ['http://127.0.0.1:8888', 'tok-a', '/home/me'],
    ['http://127.0.0.1:8889', 'tok-b', '/home/me/project'],
    ['http://127.0.0.1:8890', 'tok-c', '/']
  ]);
  assert.equal(parseFindings([stdout('no marker here\n')]), null);
  assert.equal(parseFindings([stdout(FINDINGS_MARKER + '{not json\n')]), null);
});

test('the order: the server running the kernel, then the deepest root holding the notebook, then the kernel\'s cwd; never one without jupyter-specgen', async () => {
  const findings = parseFindings([stdout(FINDINGS_MARKER + JSON.stringify(FOUND) + '\n')]) as IKernelFindings;
  const all = { specgen: true, kernels: [] };
  let found = await chooseServer(findings, '/home/me/project/a.ipynb', probes({
    'http://127.0.0.1:8888': { specgen: true, kernels: ['k-1'] }, 'http://127.0.0.1:8889': all, 'http://127.0.0.1:8890': all
  }));
  assert.deepEqual([found?.url, found?.token, found?.why], ['http://127.0.0.1:8888', 'tok-a', "runs the notebook's kernel"]);
  found = await chooseServer(findings, '/home/me/project/a.ipynb', probes({ 'http://127.0.0.1:8888': all, 'http://127.0.0.1:8889': all }));
  assert.deepEqual([found?.url, found?.why], ['http://127.0.0.1:8889', 'serves the folder of the notebook']);
  // The server running the kernel, but without jupyter-specgen: not it.
  found = await chooseServer(findings, '/srv/a.ipynb', probes({ 'http://127.0.0.1:8888': all, 'http://127.0.0.1:8889': { specgen: false, kernels: ['k-1'] } }));
  assert.deepEqual([found?.url, found?.why], ['http://127.0.0.1:8888', "serves the kernel's working directory"]);
  assert.equal(await chooseServer(findings, '/srv/a.ipynb', probes({})), null);
});

test('findServer gives up on a kernel that does not answer in time, or fails', async () => {
  const silent = async function* () {
    await new Promise(resolve => setTimeout(resolve, 1_500));
    yield stdout('late\n');
  };
  const started = Date.now();
  assert.equal(await findServer({ execute: silent, notebookPath: '/x.ipynb', timeoutMs: 100 }), null);
  assert.ok(Date.now() - started < 2_000);
  const failing = async function* () {
    yield stdout('');
    throw new Error('the kernel died');
  };
  assert.equal(await findServer({ execute: failing, notebookPath: '/x.ipynb', timeoutMs: 1000 }), null);
});

test('a notebook path relative to the chosen root', () => {
  assert.equal(relativeTo('/home/me/project', '/home/me/project/sub/a.ipynb'), 'sub/a.ipynb');
  assert.equal(relativeTo('/home/me/project/', '/home/me/project/a.ipynb'), 'a.ipynb');
  assert.equal(relativeTo('/home/me/project', '/home/me/projects/a.ipynb'), null);
  assert.equal(relativeTo('', '/a.ipynb'), null);
});
