// What the run tracker (src/outcome.ts) makes of the cells' execution summaries, without a server:
// the reports it sends, in order. jupyter.test.ts sends them to a real one and
// tests/browser/test_vscode_provider.py reads the outcomes back from its feedback store.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { IFeedbackReport } from '../../labextension/src/protocol';
import { RunTracker } from '../src/outcome';

const CELL = 'vscode-notebook-cell:/demo.ipynb#1';
const OTHER = 'vscode-notebook-cell:/demo.ipynb#2';

function accept(suggestion: string, cellId = CELL, key = `key-${suggestion}`): IFeedbackReport {
  return { path: 'demo.ipynb', prefix: 'total = ', suggestion, accepted: true, cells: [], active: 1, cell_id: cellId, key };
}

function tracker(): { runs: RunTracker; reports: IFeedbackReport[] } {
  const reports: IFeedbackReport[] = [];
  const runs = new RunTracker({
    report: async report => {
      reports.push(report);
      return 204;
    }
  });
  return { runs, reports };
}

const ended = (success: boolean, endTime: number) => ({ success, executionOrder: 1, timing: { startTime: endTime - 5, endTime } });

test('an accept is sent at once, then again with the run of its cell: the text when the run started, and its success', async () => {
  const { runs, reports } = tracker();
  await runs.report(accept('sum(numbers)'));
  assert.equal(reports.length, 1);
  assert.equal(reports[0].ran, undefined);
  await runs.executed(CELL, {}, 'total = sum(numbers)'); // started
  await runs.executed(CELL, ended(true, 100), 'total = sum(numbers)  # edited while it ran');
  assert.equal(reports.length, 2);
  assert.deepEqual(reports[1], { ...accept('sum(numbers)'), ran: { source: 'total = sum(numbers)', success: true } });
  assert.equal(runs.waiting, 0);
});

test('a failed run reports success false; an ended run never seen starting takes the text at its end', async () => {
  const { runs, reports } = tracker();
  await runs.report(accept('numbers[9]'));
  await runs.executed(CELL, ended(false, 200), 'total = numbers[9]');
  assert.deepEqual(reports[1].ran, { source: 'total = numbers[9]', success: false });
});

test('only accepts of the cell that ran are settled, each once; dismissals and other cells wait for nothing', async () => {
  const { runs, reports } = tracker();
  await runs.report(accept('sum(numbers)'));
  await runs.report(accept('len(numbers)', OTHER));
  await runs.report({ ...accept('max(numbers)'), accepted: false, key: '' });
  assert.equal(runs.waiting, 2);
  await runs.executed(OTHER, ended(true, 300), 'count = len(numbers)');
  assert.deepEqual(reports.slice(3).map(r => [r.suggestion, r.ran?.success]), [['len(numbers)', true]]);
  // The same ended run seen again, with a new accept in between: not this accept's run.
  await runs.report(accept('min(numbers)', OTHER));
  await runs.executed(OTHER, ended(true, 300), 'count = min(numbers)');
  assert.equal(reports.length, 5);
  await runs.executed(OTHER, ended(true, 301), 'count = min(numbers)');
  await runs.executed(CELL, ended(true, 302), 'total = sum(numbers)');
  assert.deepEqual(reports.slice(5).map(r => [r.suggestion, r.ran?.source]), [
    ['min(numbers)', 'count = min(numbers)'],
    ['sum(numbers)', 'total = sum(numbers)']
  ]);
  await runs.executed(CELL, ended(true, 303), 'total = sum(numbers)');
  assert.equal(reports.length, 7);
  assert.equal(runs.waiting, 0);
});
