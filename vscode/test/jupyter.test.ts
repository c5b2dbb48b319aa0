// The provider against a real `jupyter lab` running jupyter-specgen with a real backend (the tiny
// "sums" model of tests/browser/conftest.py) and a real kernel that ran `numbers = [3, 1, 2]`;
// started by tests/browser/test_vscode_provider.py, which passes where it is in the environment.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import type { IDone, IItem } from '../../labextension/src/protocol';
import { SpecgenCompletions } from '../src/completions';
import { JupyterSource } from '../src/jupyter';
import { StatusModel } from '../src/status';
import { env, notebookAt, RecordedStatus } from './helpers';

const URL_ = env('SPECGEN_JUPYTER_URL');
const TOKEN = env('SPECGEN_JUPYTER_TOKEN');
const KERNEL = env('SPECGEN_KERNEL_ID');
const RAISE = env('SPECGEN_SUMS_RAISE');
const RATIO_RAISE = env('SPECGEN_RATIO_RAISE');
const NUMBERS = env('SPECGEN_SUMS_NUMBERS');

const sent: Record<string, unknown>[] = [];
const received: Record<string, unknown>[] = [];
let source: JupyterSource;
let status: RecordedStatus;
let completions: SpecgenCompletions;

before(async () => {
  source = new JupyterSource({
    url: URL_,
    token: TOKEN,
    trace: (direction, raw) => (direction === 'sent' ? sent : received).push(JSON.parse(raw))
  });
  status = new RecordedStatus();
  completions = new SpecgenCompletions({
    source,
    status: new StatusModel(status, { mode: 'jupyter' }),
    timeoutMs: 90_000,
    debounceMs: 0
  });
  await status.until(view => view.state === 'ready', 180_000);
});

after(() => source.dispose());

function doneOf(id: unknown): IDone {
  const done = received.find(m => m.type === 'done' && m.reply_to === id);
  assert.ok(done, `no done for request ${id}`);
  return done as unknown as IDone;
}

test('the status bar says ready with the model once the server is', () => {
  const ready = status.views.find(view => view.state === 'ready')!;
  assert.match(ready.text, /specgen: .+/);
  assert.match(ready.tooltip, /Specgen is ready \(Jupyter server\)/);
});

test('validated candidates reach the provider as separate items, in the server\'s rank order', async () => {
  const doc = notebookAt('demo.ipynb', [
    { cell_type: 'code', source: NUMBERS },
    { cell_type: 'code', source: 'total = ' }
  ], 1);
  const { items } = await completions.provide(doc);
  const complete = sent.filter(m => m.type === 'complete').pop()!;
  // The same context as the JupyterLab provider, with the kernel of the notebook's session.
  assert.equal(complete.kernel_id, KERNEL);
  assert.equal(complete.prefix, 'total = ');
  assert.equal(complete.suffix, '');
  assert.equal(complete.active, 1);
  assert.deepEqual(complete.cells, doc.notebook!.cells);
  // Every item is one the server validated, in the order of its `done` (best first), several.
  const done = doneOf(complete.id);
  assert.deepEqual(items, done.items);
  assert.ok(items.length >= 2, `several items expected, got ${JSON.stringify(items)}`);
  for (const item of items) {
    assert.equal(item.verdict, 'ran', JSON.stringify(item));
    assert.notEqual(item.text.trim(), RAISE);
  }
  // The Python side checks that each runs below the notebook's first cell.
  console.log(`ITEMS ${JSON.stringify(items.map(i => i.text))}`);
  assert.equal(new Set(items.map(i => i.text.trim())).size, items.length, 'duplicate items');
  // What was shown one by one while validating is what done ranks.
  const shown = received.filter(m => m.type === 'shown' && m.reply_to === complete.id).map(m => (m.item as IItem).text);
  assert.deepEqual([...shown].sort(), items.map(i => i.text).sort());
  const view = status.last!;
  assert.equal(view.state, 'ran');
  assert.equal(view.text, `specgen: ✓ ran (${items.length})`);
  assert.match(view.tooltip, /1\/\d+: ran cleanly in a sandboxed fork of the kernel/);
  assert.ok(status.views.some(v => /generating…|validating/.test(v.text)), 'no progress shown');
});

test('a candidate that raises never reaches the provider; with none left the status bar says why', async () => {
  const doc = notebookAt('demo.ipynb', [
    { cell_type: 'code', source: NUMBERS },
    { cell_type: 'code', source: 'ratio = ' }
  ], 1);
  // The model was taught only `1 / 0` here. What may still hold up is a cut of it that ran
  // (the server's repair ladder: `1`), never the whole.
  const { items } = await completions.provide(doc);
  const complete = sent.filter(m => m.type === 'complete').pop()!;
  assert.deepEqual(items, doneOf(complete.id).items);
  for (const item of items) {
    assert.equal(item.verdict, 'ran');
    assert.ok(!item.text.includes(RATIO_RAISE), JSON.stringify(item));
  }
  const view = status.last!;
  if (items.length === 0) {
    assert.equal(view.state, 'none');
    assert.match(view.text, /^specgen: no suggestion: \d+ candidates? raised/);
    assert.match(view.tooltip, /ZeroDivisionError/);
  } else {
    assert.equal(view.state, 'ran');
  }
  console.log(`RATIO ${JSON.stringify(items.map(i => i.text))}`);
});

test('markdown cells and the cells below the cursor go to the server as they are', async () => {
  const cells = [
    { cell_type: 'markdown' as const, source: '# Sums\nAdd the numbers up.' },
    { cell_type: 'code' as const, source: NUMBERS },
    { cell_type: 'code' as const, source: 'total = ' },
    { cell_type: 'code' as const, source: 'print(total)' }
  ];
  await completions.provide(notebookAt('demo.ipynb', cells, 2));
  const complete = sent.filter(m => m.type === 'complete').pop()!;
  assert.deepEqual(complete.cells, cells);
  assert.equal(complete.active, 2);
  assert.ok(received.some(m => (m.type === 'done' || m.type === 'error') && m.reply_to === complete.id));
});

test('a newer request of the same cell cancels the older one on both ends', async () => {
  const cells = (source: string) => [
    { cell_type: 'code' as const, source: NUMBERS },
    { cell_type: 'code' as const, source }
  ];
  const before = sent.length;
  const first = completions.provide(notebookAt('demo.ipynb', cells('total ='), 1, 'cell-x'));
  while (!sent.slice(before).some(m => m.type === 'complete')) {
    await new Promise(resolve => setTimeout(resolve, 10));
  }
  const second = completions.provide(notebookAt('demo.ipynb', cells('total = '), 1, 'cell-x'));
  const [older, newer] = await Promise.all([first, second]);
  assert.deepEqual(older.items, []);
  assert.ok(newer.items.length >= 1, 'the newer request got nothing');
  const ids = sent.filter(m => m.type === 'complete').slice(-2).map(m => m.id);
  assert.ok(sent.some(m => m.type === 'cancel' && m.id === ids[0]), 'the older request was not cancelled on the server');
});

test('a .py file completes without a kernel: items come marked not validated', async () => {
  const text = `${NUMBERS}\ntotal = `;
  const { items } = await completions.provide({ path: 'script.py', cellId: 'script.py', text, offset: text.length, notebook: null });
  const complete = sent.filter(m => m.type === 'complete').pop()!;
  assert.equal(complete.kernel_id, null);
  assert.deepEqual(complete.cells, []);
  assert.ok(received.some(m => m.type === 'done' && m.reply_to === complete.id), 'no done');
  for (const item of items) {
    assert.equal(item.verdict, 'not_validated');
    assert.match(item.detail, /no kernel/);
  }
});

test('an accepted suggestion is reported to the server\'s feedback store', async () => {
  const doc = notebookAt('demo.ipynb', [
    { cell_type: 'code', source: NUMBERS },
    { cell_type: 'code', source: 'total = ' }
  ], 1);
  const { items, fields } = await completions.provide(doc);
  assert.ok(items.length > 0 && fields);
  await completions.accepted(fields, items[items.length - 1].text);
  console.log(`ACCEPTED ${JSON.stringify(items[items.length - 1].text)}`);
});

test('a wrong token: the status bar says the server refused it and which setting to fix', async () => {
  const wrong = new JupyterSource({ url: URL_, token: 'not-the-token' });
  const seen = new RecordedStatus();
  const model = new StatusModel(seen, { mode: 'jupyter' });
  wrong.onStatus(s => model.setSource(s));
  try {
    const view = await seen.until(v => v.state === 'error', 20_000);
    assert.match(view.text, /refused the token \(HTTP 40[13]\)/);
    assert.match(view.tooltip, /check specgen\.jupyter\.token/);
  } finally {
    wrong.dispose();
  }
});
