// Without a server: a Jupyter URL where nothing listens gives a clear status with the reason,
// and a request answers at once with nothing (no hang until the timeout). Also the pure part of
// finding a notebook's kernel among the server's sessions.

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';

import { BackendSource } from '../src/backend';
import { SpecgenCompletions } from '../src/completions';
import { JupyterSource, kernelOfSessions } from '../src/jupyter';
import { StatusModel } from '../src/status';
import { notebookAt, RecordedStatus } from './helpers';

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise(resolve => server.close(resolve));
  return port;
}

test('an unreachable Jupyter server: the status says so with the reason, a request answers at once', async () => {
  const port = await closedPort();
  const source = new JupyterSource({ url: `http://127.0.0.1:${port}/`, token: 't' });
  const status = new RecordedStatus();
  const completions = new SpecgenCompletions({ source, status: new StatusModel(status, { mode: 'jupyter' }), debounceMs: 0, timeoutMs: 60_000 });
  try {
    const down = await status.until(v => v.state === 'error', 10_000);
    assert.match(down.text, new RegExp(`cannot reach the Jupyter server at http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
    assert.match(down.tooltip, /retrying in \d+ s/);
    const started = Date.now();
    const { items } = await completions.provide(notebookAt('demo.ipynb', [{ cell_type: 'code', source: 'x = ' }], 0));
    assert.deepEqual(items, []);
    assert.ok(Date.now() - started < 5_000, 'the request waited for its timeout');
    assert.equal(status.last!.state, 'none');
    assert.match(status.last!.text, /no suggestion: cannot reach the Jupyter server/);
  } finally {
    source.dispose();
  }
});

test('an unreachable standalone backend: the status says so with the reason', async () => {
  const port = await closedPort();
  const source = new BackendSource({ url: `ws://127.0.0.1:${port}`, token: 't', user: 'vscode-test', personal: false, candidates: 2, temperature: 0.4 });
  const status = new RecordedStatus();
  const model = new StatusModel(status, { mode: 'backend' });
  source.onStatus(s => model.setSource(s));
  try {
    const down = await status.until(v => v.state === 'error', 10_000);
    assert.match(down.text, new RegExp(`cannot reach the specgen-backend at ws://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
    assert.match(down.tooltip, /standalone specgen-backend/);
  } finally {
    source.dispose();
  }
});

test("a notebook's kernel is found among the server's sessions, VS Code's -jvsc- paths included", () => {
  const sessions = [
    { path: 'other.ipynb', kernel: { id: 'k-other' } },
    { path: 'sub/demo-jvsc-5f0c1d2e-8a9b-4c3d-9e8f-0a1b2c3d4e5f.ipynb', kernel: { id: 'k-demo' } },
    { path: 'lost.ipynb', kernel: null }
  ];
  assert.equal(kernelOfSessions(sessions, 'sub/demo.ipynb'), 'k-demo');
  assert.equal(kernelOfSessions(sessions, 'elsewhere/demo.ipynb'), 'k-demo'); // the only demo.ipynb
  assert.equal(kernelOfSessions(sessions, 'other.ipynb'), 'k-other');
  assert.equal(kernelOfSessions(sessions, 'lost.ipynb'), null);
  assert.equal(kernelOfSessions([...sessions, { path: 'b/demo.ipynb', kernel: { id: 'k2' } }], 'c/demo.ipynb'), null);
});
