// The provider against a real `jupyter lab` running jupyter-specgen with a real backend (the tiny
// "sums" model of tests/browser/conftest.py) and a real kernel that ran `numbers = [3, 1, 2]`;
// started by tests/browser/test_vscode_provider.py, which passes where it is in the environment.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import type { IDone, IFeedbackReport, IItem } from '../../labextension/src/protocol';
import { SpecgenCompletions } from '../src/completions';
import type { CompletionFields } from '../src/context';
import { FeedbackTracker } from '../src/feedback';
import { chooseServer, FIND_SERVERS_CODE, findServer, IKernelOutput, parseFindings, probeServer } from '../src/discover';
import { JupyterSource } from '../src/jupyter';
import { RunTracker } from '../src/outcome';
import type { ICursor, IDocumentSnapshot } from '../src/seam';
import { StatusModel } from '../src/status';
import { env, executeInKernel, nextVersion, notebookAt, RecordedStatus, until } from './helpers';

const URL_ = env('SPECGEN_JUPYTER_URL');
const TOKEN = env('SPECGEN_JUPYTER_TOKEN');
const KERNEL = env('SPECGEN_KERNEL_ID');
const RAISE = env('SPECGEN_SUMS_RAISE');
const RATIO_RAISE = env('SPECGEN_RATIO_RAISE');
const NUMBERS = env('SPECGEN_SUMS_NUMBERS');
const ROOT = env('SPECGEN_JUPYTER_ROOT');

const sent: Record<string, unknown>[] = [];
const received: Record<string, unknown>[] = [];
let source: JupyterSource;
let status: RecordedStatus;
let completions: SpecgenCompletions;
// What the provider's `requery` does in a test (extension.ts asks VS Code to query again).
let onRequery: (at: ICursor) => void = () => undefined;

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
    debounceMs: 0,
    requery: at => onRequery(at)
  });
  await status.until(view => view.state === 'ready', 180_000);
});

after(() => source.dispose());

const byText = (a: IItem, b: IItem) => (a.text < b.text ? -1 : a.text > b.text ? 1 : 0);

const completesSent = () => sent.filter(m => m.type === 'complete');

/** The request's end (done or error) arrived, and the provider has taken it. */
async function ended(id: unknown): Promise<void> {
  await until(() => received.some(m => (m.type === 'done' || m.type === 'error') && m.reply_to === id), 90_000, `the end of request ${id}`);
  await new Promise(resolve => setTimeout(resolve, 50));
}

/**
 * The provider's first answer for `doc`, then, once the request ended, every item: the same
 * cursor asked again (as VS Code does when asked to), answered from the cache without a request.
 */
async function provideAll(doc: IDocumentSnapshot): Promise<{ first: SpecgenCompletions.IResult; all: SpecgenCompletions.IResult; id: unknown }> {
  const before = completesSent().length;
  const first = await completions.provide(doc);
  const id = completesSent()[before]?.id;
  await ended(id);
  const all = first.items.length ? await completions.provide(doc) : first;
  assert.equal(completesSent().length, before + 1, 'the same cursor again sent a new request');
  return { first, all, id };
}

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

test('the first validated item comes at once; the rest, in the server\'s rank order, when VS Code asks again', async () => {
  const doc = notebookAt('demo.ipynb', [
    { cell_type: 'code', source: NUMBERS },
    { cell_type: 'code', source: 'total = ' }
  ], 1);
  const requeried: ICursor[] = [];
  const again: SpecgenCompletions.IResult[] = [];
  // As VS Code does after editor.action.inlineSuggest.trigger: the same cursor asked again.
  onRequery = at => {
    requeried.push(at);
    void completions.provide(doc, undefined, { explicit: true }).then(result => again.push(result));
  };
  const before = completesSent().length;
  const first = await completions.provide(doc);
  const complete = completesSent().pop()!;
  const doneYet = received.some(m => m.type === 'done' && m.reply_to === complete.id);
  const shownYet = received.filter(m => m.type === 'shown' && m.reply_to === complete.id).length;
  const atFirst = status.last!;
  // The same context as the JupyterLab provider, with the kernel of the notebook's session.
  assert.equal(complete.kernel_id, KERNEL);
  assert.equal(complete.prefix, 'total = ');
  assert.equal(complete.suffix, '');
  assert.equal(complete.active, 1);
  assert.deepEqual(complete.cells, doc.notebook!.cells);
  // The promise resolved at the first `shown` frame, with that item alone: not at `done`.
  const firstShown = received.find(m => m.type === 'shown' && m.reply_to === complete.id);
  assert.ok(firstShown, 'the provider answered before any item was shown');
  assert.deepEqual(first.items, [firstShown.item]);
  assert.equal(first.items[0].verdict, 'ran');
  assert.equal(atFirst.state, 'ran');
  assert.match(atFirst.text, /^specgen: ✓ ran/);
  assert.doesNotMatch(atFirst.text, /\(\d+\)/, 'the status counts more items than VS Code has');
  console.log(`FIRST ${JSON.stringify({ doneYet, shownYet })}`);

  await ended(complete.id);
  const done = doneOf(complete.id);
  assert.ok(done.items.length >= 2, `several items expected, got ${JSON.stringify(done.items)}`);
  // More came, so VS Code was asked to query this cursor again; that query is answered from the
  // cache, with no new request: every item, the one on screen first (VS Code shows the first of a
  // new list), then the others in the order of `done` (best first).
  await until(() => again.length > 0 && again[again.length - 1].items.length === done.items.length, 10_000, 'a query again with every item');
  assert.ok(requeried.every(at => at.cellId === doc.cellId && at.version === doc.version && at.offset === doc.offset), JSON.stringify(requeried));
  const items = again[again.length - 1].items;
  assert.deepEqual(items, [first.items[0], ...done.items.filter(item => item.text !== first.items[0].text)]);
  assert.deepEqual([...items].sort(byText), [...done.items].sort(byText));
  assert.equal(completesSent().length, before + 1, 'asking again sent a new request');
  onRequery = () => undefined;
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

test('Alt+] before done: an explicit query of the cursor waits for done and gets every item, then no query again', async () => {
  const doc = notebookAt('demo.ipynb', [
    { cell_type: 'code', source: NUMBERS },
    { cell_type: 'code', source: 'total = ' }
  ], 1);
  const requeried: ICursor[] = [];
  onRequery = at => requeried.push(at);
  const before = completesSent().length;
  const first = await completions.provide(doc);
  const complete = completesSent().pop()!;
  const doneYet = () => received.some(m => m.type === 'done' && m.reply_to === complete.id);
  const early = doneYet();
  // VS Code drops an explicit query at the cursor and version of its last explicit one: answered
  // with part of the items, it could never get the rest.
  const all = await completions.provide(doc, undefined, { explicit: true });
  assert.ok(doneYet(), 'the explicit query was answered before done');
  const done = doneOf(complete.id);
  assert.deepEqual(all.items, [first.items[0], ...done.items.filter(item => item.text !== first.items[0].text)]);
  assert.equal(completesSent().length, before + 1, 'the explicit query sent a new request');
  await new Promise(resolve => setTimeout(resolve, 100));
  if (!early) {
    assert.deepEqual(requeried, [], 'VS Code was asked again though it has every item');
  }
  onRequery = () => undefined;
  assert.equal(status.last!.text, `specgen: ${all.items[0].verdict === 'ran' ? '✓ ran' : ''}${all.items.length > 1 ? ` (${all.items.length})` : ''}`);
  console.log(`EXPLICIT ${JSON.stringify({ early, items: all.items.length })}`);
});

test('a candidate that raises never reaches the provider; with none left the status bar says why', async () => {
  const doc = notebookAt('demo.ipynb', [
    { cell_type: 'code', source: NUMBERS },
    { cell_type: 'code', source: 'ratio = ' }
  ], 1);
  // The model was taught only `1 / 0` here. What may still hold up is a cut of it that ran
  // (the server's repair ladder: `1`), never the whole.
  const { all: { items }, id } = await provideAll(doc);
  assert.deepEqual([...items].sort(byText), [...doneOf(id).items].sort(byText));
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
  await provideAll(notebookAt('demo.ipynb', cells, 2));
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
  await ended(ids[1]); // the newer goes on validating after its first item: let it end
});

test('a .py file completes without a kernel: items come marked not validated', async () => {
  const text = `${NUMBERS}\ntotal = `;
  const { all: { items } } = await provideAll({ path: 'script.py', cellId: 'script.py', version: nextVersion(), text, offset: text.length, notebook: null });
  const complete = sent.filter(m => m.type === 'complete').pop()!;
  assert.equal(complete.kernel_id, null);
  assert.deepEqual(complete.cells, []);
  assert.ok(received.some(m => m.type === 'done' && m.reply_to === complete.id), 'no done');
  for (const item of items) {
    assert.equal(item.verdict, 'not_validated');
    assert.match(item.detail, /no kernel/);
  }
});

/** A tracker whose reports go to the real server, each kept with the HTTP status it got. */
function tracked(): { tracker: FeedbackTracker; reports: { report: IFeedbackReport; status: number }[] } {
  const reports: { report: IFeedbackReport; status: number }[] = [];
  const tracker = new FeedbackTracker({
    report: async report => {
      const status = await source.feedback(report);
      reports.push({ report, status });
      return status;
    }
  });
  return { tracker, reports };
}

test('an accepted suggestion is reported to the server\'s feedback store', async () => {
  const doc = notebookAt('demo.ipynb', [
    { cell_type: 'code', source: NUMBERS },
    { cell_type: 'code', source: 'total = ' }
  ], 1);
  const { tracker, reports } = tracked();
  const { all: { items, fields, at } } = await provideAll(doc);
  assert.ok(items.length > 0 && fields);
  tracker.offered(at, fields, items);
  const text = items[items.length - 1].text;
  // Tab on the last item: VS Code inserts it, then runs its command.
  tracker.changed(doc.cellId, [{ offset: doc.offset, removed: 0, text }]);
  assert.equal(await tracker.accepted(fields, text), 204);
  assert.deepEqual(reports.map(r => [r.report.prefix, r.report.suggestion, r.report.accepted, r.report.partial ?? false]), [['total = ', text, true, false]]);
  console.log(`ACCEPTED ${JSON.stringify(text)}`);
});

test('inferred from the edits: a partial accept reaches the feedback store as partial, then the rest as an accept; typing over as a dismissal', async () => {
  const cells = [
    { cell_type: 'code' as const, source: NUMBERS },
    { cell_type: 'code' as const, source: 'total = ' }
  ];
  const { tracker, reports } = tracked();
  const doc = notebookAt('demo.ipynb', cells, 1, 'cell-feedback');
  const { all: { items, fields, at } } = await provideAll(doc);
  assert.ok(items.length > 0 && fields, 'no item to take part of');
  // Accept Next Word takes spaces and a word (or a run of other characters).
  const item = items.find(i => /^\s*(\w+|[^\w\s]+)/.exec(i.text)![0].length >= 2 && /^\s*(\w+|[^\w\s]+)/.exec(i.text)![0].length < i.text.length) ?? items[0];
  const word = /^\s*(\w+|[^\w\s]+)/.exec(item.text)![0];
  const part = word.length >= 2 && word.length < item.text.length ? word : item.text.slice(0, 2);
  assert.ok(part.length < item.text.length, `${JSON.stringify(item.text)} is too short to take part of`);
  tracker.offered(at, fields, items);
  // Ctrl+→: VS Code inserts the word at the cursor, which moves past it.
  tracker.changed(doc.cellId, [{ offset: doc.offset, removed: 0, text: part }]);
  tracker.moved(doc.cellId, doc.offset + part.length);
  // Tab: the rest of the item, then its command (with the item's whole text).
  tracker.changed(doc.cellId, [{ offset: doc.offset + part.length, removed: 0, text: item.text.slice(part.length) }]);
  await tracker.accepted(fields, item.text);
  await until(() => reports.length >= 2, 10_000, 'two reports');
  assert.deepEqual(reports.map(r => [r.report.prefix, r.report.suggestion, r.report.accepted, r.report.partial ?? false, r.status]), [
    ['total = ', part, true, true, 204],
    [`total = ${part}`, item.text.slice(part.length), true, false, 204]
  ]);
  assert.ok(reports.every(r => r.report.key), 'an accept without a key');

  // Items for a new cursor, then a character none of them starts with: typed over.
  const next = notebookAt('demo.ipynb', cells, 1, 'cell-feedback');
  const shown = await provideAll(next);
  assert.ok(shown.all.items.length > 0 && shown.all.fields);
  tracker.offered(shown.all.at, shown.all.fields, shown.all.items);
  const typed = ['@', '#', '~', 'Z'].find(c => !shown.all.items.some(i => i.text.startsWith(c)))!;
  tracker.changed(next.cellId, [{ offset: next.offset, removed: 0, text: typed }]);
  await until(() => reports.length >= 3, 10_000, 'the dismissal report');
  const dismissed = reports[2];
  assert.deepEqual([dismissed.report.prefix, dismissed.report.suggestion, dismissed.report.accepted, dismissed.report.key, dismissed.status],
                   ['total = ', shown.all.items[0].text, false, '', 204]);
  assert.equal(reports.length, 3);
  console.log(`PARTIAL ${JSON.stringify([part, item.text.slice(part.length)])}`);
  console.log(`DISMISSED ${JSON.stringify(shown.all.items[0].text)}`);
});

test('the next run of the cell settles an accept on the server: a run that succeeded as kept, a failed one as raised', async () => {
  const cells = [
    { cell_type: 'code' as const, source: NUMBERS },
    { cell_type: 'code' as const, source: 'total = ' }
  ];
  const reports: { report: IFeedbackReport; status: number }[] = [];
  const runs = new RunTracker({
    report: async report => {
      const status = await source.feedback(report);
      reports.push({ report, status });
      return status;
    }
  });
  const tracker = new FeedbackTracker({ report: report => runs.report(report) });
  const doc = notebookAt('demo.ipynb', cells, 1, 'cell-ran');
  const { all: { items, fields, at } } = await provideAll(doc);
  assert.ok(items.length > 0 && fields, 'no item to accept');
  const accepts: string[] = [];
  // Tab on the first item in cell-ran, and on the last one in cell-raised (the same request's
  // items, given for the same cursor of another cell).
  for (const [cellId, text] of [['cell-ran', items[0].text], ['cell-raised', items[items.length - 1].text]] as const) {
    const mine: CompletionFields = { ...fields!, cell_id: cellId };
    tracker.offered({ ...at, cellId }, mine, items);
    tracker.changed(cellId, [{ offset: doc.offset, removed: 0, text }]);
    assert.equal(await tracker.accepted(mine, text), 204);
    accepts.push(text);
  }
  assert.equal(runs.waiting, 2);
  // VS Code's execution summaries: a run that starts (no success yet), then ends.
  const now = Date.now();
  await runs.executed('cell-ran', {}, `total = ${accepts[0]}`);
  await runs.executed('cell-ran', { success: true, executionOrder: 2, timing: { startTime: now, endTime: now + 5 } }, `total = ${accepts[0]}`);
  await runs.executed('cell-raised', { success: false, executionOrder: 3, timing: { startTime: now, endTime: now + 9 } }, `total = ${accepts[1]}`);
  assert.equal(runs.waiting, 0);
  assert.deepEqual(reports.map(r => [r.report.cell_id, r.report.suggestion, r.report.ran ?? null, r.status]), [
    ['cell-ran', accepts[0], null, 204],
    ['cell-raised', accepts[1], null, 204],
    ['cell-ran', accepts[0], { source: `total = ${accepts[0]}`, success: true }, 204],
    ['cell-raised', accepts[1], { source: `total = ${accepts[1]}`, success: false }, 204]
  ]);
  assert.equal(reports[2].report.key, reports[0].report.key, 'the run was reported under another key than its accept');
  console.log(`RAN ${JSON.stringify(accepts)}`);
});

test('specgen.mode auto: the snippet run in the notebook\'s real kernel finds this server, its URL and token, and leaves nothing behind', async () => {
  const execute = (code: string) => executeInKernel(URL_, TOKEN, KERNEL, code);
  const found = await findServer({ execute, notebookPath: `${ROOT}/demo.ipynb`, timeoutMs: 60_000 });
  assert.ok(found, 'no server found from the kernel');
  assert.equal(found.url, URL_);
  assert.equal(found.token, TOKEN);
  assert.equal(found.why, "runs the notebook's kernel");
  // The same findings without the kernel among a server's kernels: the root_dir holding the
  // notebook, then the one holding the kernel's working directory; a server that does not answer
  // (no jupyter-specgen there) is never picked.
  const outputs: IKernelOutput[] = [];
  for await (const output of execute(FIND_SERVERS_CODE)) {
    outputs.push(output);
  }
  const findings = parseFindings(outputs);
  assert.ok(findings && findings.kernelId === KERNEL, `the kernel's id was not found: ${findings?.kernelId}`);
  findings.servers.push({ url: 'http://127.0.0.1:9', token: 'x', rootDir: '/' });
  const blind = async (url: string, token: string) => ({ ...(await probeServer(url, token)), kernels: [] });
  const byRoot = await chooseServer(findings, `${ROOT}/demo.ipynb`, blind);
  assert.deepEqual([byRoot?.url, byRoot?.token, byRoot?.why], [URL_, TOKEN, 'serves the folder of the notebook']);
  const byCwd = await chooseServer(findings, '/elsewhere/demo.ipynb', blind);
  assert.deepEqual([byCwd?.url, byCwd?.why], [URL_, "serves the kernel's working directory"]);
  assert.equal(await chooseServer({ ...findings, servers: findings.servers.slice(-1) }, `${ROOT}/demo.ipynb`, blind), null);
  // No name of the snippet stays in the kernel's namespace.
  let left = '';
  for await (const output of execute("print(sorted(n for n in globals() if 'specgen_find' in n))")) {
    left += output.items.map(item => new TextDecoder().decode(item.data as Uint8Array)).join('');
  }
  assert.equal(left.trim(), '[]');
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
