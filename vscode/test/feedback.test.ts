// What the feedback tracker infers from the edits made where items were given (src/feedback.ts),
// without a server: the reports it makes, kept in order. jupyter.test.ts sends them to a real
// one and tests/browser/test_vscode_provider.py reads them back from its feedback store.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { IFeedbackReport, IItem } from '../../labextension/src/protocol';
import type { CompletionFields } from '../src/context';
import { FeedbackTracker } from '../src/feedback';

const CELL = 'vscode-notebook-cell:/demo.ipynb#1';
const PREFIX = 'total = ';
const AT = { cellId: CELL, offset: PREFIX.length };

function fields(prefix = PREFIX): CompletionFields {
  return {
    path: 'demo.ipynb',
    cell_id: CELL,
    prefix,
    suffix: '',
    cells: [{ cell_type: 'code', source: 'numbers = [3, 1, 2]' }, { cell_type: 'code', source: prefix }],
    active: 1,
    kernel_id: null
  };
}

function items(...texts: string[]): IItem[] {
  return texts.map(text => ({ text, verdict: 'ran', detail: '', score: 0, adapter: '' }));
}

/** A tracker and what it reported: [prefix, suggestion, accepted, partial]. */
function tracker(settleMs = 1000): { tracker: FeedbackTracker; said: () => [string, string, boolean, boolean][]; reports: IFeedbackReport[] } {
  const reports: IFeedbackReport[] = [];
  const made = new FeedbackTracker({
    report: async report => {
      reports.push(report);
      return 204;
    },
    settleMs
  });
  return {
    tracker: made,
    reports,
    said: () => reports.map(r => [r.prefix, r.suggestion, r.accepted, r.partial ?? false])
  };
}

/** VS Code inserting `text` at `offset` of the cell. */
const insert = (offset: number, text: string) => [{ offset, removed: 0, text }];

test('Accept Next Word is a partial accept; Tab on the rest reports the rest at the longer prefix, once', async () => {
  const { tracker: t, said, reports } = tracker();
  const asked = fields();
  t.offered(AT, asked, items('sum(numbers)', 'max(numbers)'));
  t.changed(CELL, insert(8, 'sum'));
  t.moved(CELL, 11);
  assert.deepEqual(said(), [[PREFIX, 'sum', true, true]]);
  t.changed(CELL, insert(11, '(numbers)')); // Tab: the edit, then the item's command
  assert.equal(reports.length, 1, 'the edit that completes an item is not reported: its command is');
  assert.equal(await t.accepted(asked, 'sum(numbers)'), 204);
  assert.deepEqual(said(), [[PREFIX, 'sum', true, true], ['total = sum', '(numbers)', true, false]]);
  assert.ok(reports.every(r => r.key && r.cell_id === CELL && r.path === 'demo.ipynb' && r.active === 1 && r.cells!.length === 2));
});

test('Tab at once is one accept of the whole item; Accept Line of a multi-line item is partial', async () => {
  const { tracker: t, said } = tracker();
  const asked = fields();
  t.offered(AT, asked, items('sum(numbers)'));
  t.changed(CELL, insert(8, 'sum(numbers)'));
  await t.accepted(asked, 'sum(numbers)');
  assert.deepEqual(said(), [[PREFIX, 'sum(numbers)', true, false]]);

  const lines = fields('for n in numbers:');
  t.offered({ cellId: CELL, offset: 17 }, lines, items('\n    print(n)\nprint("done")'));
  t.changed(CELL, insert(17, '\n    print(n)'));
  assert.deepEqual(said()[1], ['for n in numbers:', '\n    print(n)', true, true]);
});

test('typing over: a dismissal of the item that fit what was typed before; typing through is not', () => {
  const { tracker: t, said, reports } = tracker();
  t.offered(AT, fields(), items('max(numbers)', 'sum(numbers)'));
  t.changed(CELL, insert(8, 's')); // one character: typing, not a partial accept
  t.moved(CELL, 9);
  t.changed(CELL, insert(9, 'u'));
  assert.deepEqual(said(), []);
  t.changed(CELL, insert(10, 'x'));
  assert.deepEqual(said(), [[PREFIX, 'sum(numbers)', false, false]]);
  assert.equal(reports[0].key, '');
  t.changed(CELL, insert(11, 'y')); // reported once: nothing shows any more
  assert.equal(reports.length, 1);
});

test('an auto-closed bracket, a word completed from the suggest widget and Backspace keep the items showing', () => {
  const { tracker: t, said } = tracker();
  t.offered(AT, fields(), items('sum(numbers)'));
  t.changed(CELL, insert(8, 'su'));
  t.changed(CELL, [{ offset: 8, removed: 2, text: 'sum' }]); // the suggest widget replaces `su`
  t.changed(CELL, insert(11, '()')); // typing `(` inserts `()`, the cursor between
  t.moved(CELL, 12);
  t.changed(CELL, [{ offset: 11, removed: 1, text: '' }]); // the `(` deleted
  t.changed(CELL, insert(11, '(n'));
  assert.deepEqual(said(), [[PREFIX, 'su', true, true], ['total = sum', '(n', true, true]]);
  assert.equal(t.showing?.taken, 'sum(n');
});

test('gone without a report: typed through and on, an edit elsewhere, the cursor moved, another cell, newer items', () => {
  const { tracker: t, reports } = tracker();
  const offer = () => t.offered(AT, fields(), items('sum(numbers)'));
  offer();
  t.changed(CELL, insert(8, 'sum(numbers)'));
  t.changed(CELL, insert(20, ' + 1'));
  offer();
  t.changed(CELL, insert(0, 'x')); // above the cursor
  offer();
  t.moved(CELL, 3);
  t.changed(CELL, insert(8, 'zzz'));
  offer();
  t.changed('vscode-notebook-cell:/demo.ipynb#2', insert(0, 'zzz'));
  t.moved('vscode-notebook-cell:/demo.ipynb#2', 3);
  t.changed(CELL, insert(8, 'zzz'));
  offer();
  t.offered({ cellId: CELL, offset: 9 }, fields('total =  '), items('len(numbers)'));
  t.changed(CELL, insert(8, 'zzz')); // not at the newer items' place
  offer();
  t.changed(CELL, [{ offset: 8, removed: 0, text: 'zz' }, { offset: 30, removed: 0, text: 'zz' }]); // two cursors
  assert.deepEqual(reports, []);
});

test('more items for the same cursor (the cache) join those shown; nothing offered drops them', () => {
  const { tracker: t, said } = tracker();
  const asked = fields();
  t.offered(AT, asked, items('sum(numbers)'));
  t.offered(AT, asked, items('sum(numbers)', 'max(numbers)'));
  assert.equal(t.showing?.items.length, 2);
  t.changed(CELL, insert(8, 'm')); // fits the item that came later: not typed over
  t.changed(CELL, insert(9, 'ax'));
  assert.deepEqual(said(), [['total = m', 'ax', true, true]]);
  t.offered({ cellId: CELL, offset: 11 }, fields('total = max'), []);
  assert.equal(t.showing, null);
});

test('an insertion that is one item and the start of another: Tab if its command comes, else a partial accept', async () => {
  const both = () => items('len', 'len(numbers)');
  const tab = tracker();
  const asked = fields();
  tab.tracker.offered(AT, asked, both());
  tab.tracker.changed(CELL, insert(8, 'len'));
  tab.tracker.moved(CELL, 11);
  await tab.tracker.accepted(asked, 'len');
  await new Promise(resolve => setTimeout(resolve, 50));
  assert.deepEqual(tab.said(), [[PREFIX, 'len', true, false]]);

  const word = tracker(20);
  word.tracker.offered(AT, fields(), both());
  word.tracker.changed(CELL, insert(8, 'len'));
  assert.deepEqual(word.said(), []);
  await new Promise(resolve => setTimeout(resolve, 60));
  assert.deepEqual(word.said(), [[PREFIX, 'len', true, true]]);

  const rest = tracker();
  const again = fields();
  rest.tracker.offered(AT, again, both());
  rest.tracker.changed(CELL, insert(8, 'len'));
  rest.tracker.changed(CELL, insert(11, '(numbers)'));
  await rest.tracker.accepted(again, 'len(numbers)');
  assert.deepEqual(rest.said(), [[PREFIX, 'len', true, true], ['total = len', '(numbers)', true, false]]);
});
