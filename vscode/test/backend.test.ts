// The provider against a real standalone `specgen-backend serve` (the tiny "sums" model), started
// by tests/browser/test_vscode_provider.py: plain completions, every one marked not validated.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { BackendSource, NOT_VALIDATED_DETAIL } from '../src/backend';
import { SpecgenCompletions } from '../src/completions';
import { StatusModel } from '../src/status';
import { env, notebookAt, RecordedStatus } from './helpers';

const URL_ = env('SPECGEN_BACKEND_URL');
const TOKEN = env('SPECGEN_BACKEND_TOKEN');
const RUN: string[] = JSON.parse(env('SPECGEN_SUMS_RUN'));
const RAISE = env('SPECGEN_SUMS_RAISE');
const NUMBERS = env('SPECGEN_SUMS_NUMBERS');

test('standalone: several candidates come as items, all marked not validated', async () => {
  const source = new BackendSource({ url: URL_, token: TOKEN, user: 'vscode-test', personal: false, candidates: 8, temperature: 1.0 });
  const status = new RecordedStatus();
  const completions = new SpecgenCompletions({ source, status: new StatusModel(status, { mode: 'backend' }), debounceMs: 0, timeoutMs: 90_000 });
  try {
    const ready = await status.until(v => v.state === 'ready', 180_000);
    assert.match(ready.tooltip, /Specgen is ready \(standalone specgen-backend\)/);
    const doc = notebookAt('demo.ipynb', [
      { cell_type: 'code', source: NUMBERS },
      { cell_type: 'code', source: 'total = ' }
    ], 1);
    const { items } = await completions.provide(doc);
    assert.ok(items.length >= 2, `several items expected, got ${JSON.stringify(items)}`);
    for (const item of items) {
      assert.equal(item.verdict, 'not_validated');
      assert.equal(item.detail, NOT_VALIDATED_DETAIL);
    }
    // Most likely first; no duplicates.
    const scores = items.map(i => i.score);
    assert.deepEqual(scores, [...scores].sort((a, b) => b - a));
    assert.equal(new Set(items.map(i => i.text.trimEnd())).size, items.length);
    // The model writes what it was taught, raising or not: nothing here ran them.
    const known = [...RUN, RAISE];
    assert.ok(items.some(i => known.includes(i.text.trim())), JSON.stringify(items));
    const view = status.last!;
    assert.equal(view.state, 'not_validated');
    assert.match(view.text, /^specgen: \? not validated: standalone specgen-backend/);
    assert.match(view.tooltip, /was not run before being shown/);
  } finally {
    source.dispose();
  }
});

test('standalone with a wrong token: the status says the backend refused it', async () => {
  const source = new BackendSource({ url: URL_, token: 'wrong', user: 'vscode-test', personal: false, candidates: 1, temperature: 0 });
  const status = new RecordedStatus();
  const model = new StatusModel(status, { mode: 'backend' });
  source.onStatus(s => model.setSource(s));
  try {
    const view = await status.until(v => v.state === 'error', 20_000);
    assert.match(view.text, /refused the token \(HTTP 401\)/);
    assert.match(view.tooltip, /check specgen\.backend\.tokenFile/);
  } finally {
    source.dispose();
  }
});
