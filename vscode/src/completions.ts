// The provider without VS Code: for a cursor (seam.IDocumentSnapshot), the items to show, best
// first. It waits a little for typing to pause, finds the notebook's kernel on the server, sends
// the same context as the JupyterLab provider, stops the previous request of the same cell, and
// tells the status bar where things are. extension.ts turns the items into VS Code's
// InlineCompletionItems (several items: VS Code's inline suggestion toolbar cycles them).
//
// VS Code asks for all items of a cursor at once, with one promise; the server validates them
// one by one. So that the first one that held up shows as soon as it does (as in JupyterLab),
// the promise resolves at the first `shown` frame with that item alone, and the request goes on.
// What holds up later, and the ranked list of `done` (after the item on screen), go into a small
// cache under the cursor (cell, version, offset); at `done`, `requery` asks VS Code to ask again
// there, and that call is answered from the cache at once, with no new request. Only items the
// source gave (Jupyter mode: `shown` frames and `done`, i.e. validated ones) ever go into it.
//
// Once, at `done`, because VS Code drops an explicit query (editor.action.inlineSuggest.trigger,
// Alt+]) at the cursor and document version of its last explicit one: after one answer with part
// of the items, the rest could never reach it. For the same reason an explicit query of a cursor
// whose request still runs (Alt+] before `done`) waits for `done` and gets every item.

import type { IItem } from '../../labextension/src/protocol';
import { captureContext, CompletionFields } from './context';
import type { ICancelSignal, ICursor, IDocumentSnapshot, IRequery } from './seam';
import type { IAnswer, ISource } from './source';
import type { StatusModel } from './status';

export class SpecgenCompletions {
  constructor(options: SpecgenCompletions.IOptions) {
    this._source = options.source;
    this._status = options.status;
    this._timeoutMs = options.timeoutMs ?? 15000;
    this._debounceMs = options.debounceMs ?? 250;
    this._requery = options.requery ?? null;
    this._status.setSource(this._source.status);
    this._source.onStatus(status => this._status.setSource(status));
  }

  /** The last final answer (for the tests). */
  get lastAnswer(): IAnswer | null {
    return this._lastAnswer;
  }

  /**
   * The items for `doc`'s cursor: the first validated one as soon as it is, or everything
   * validated so far when this cursor was asked before; [] when none held up, on error or cancel.
   */
  async provide(
    doc: IDocumentSnapshot,
    cancel?: ICancelSignal,
    options: SpecgenCompletions.IProvideOptions = {}
  ): Promise<SpecgenCompletions.IResult> {
    const at: ICursor = { cellId: doc.cellId, version: doc.version, offset: doc.offset };
    const key = keyOf(at);
    const running = this._latestByCell.get(doc.cellId);
    const cached = this._cache.get(key);
    if (cached && (cached.complete || running?.key === key)) {
      // The same cursor again (VS Code re-querying because more items came, or Alt+]): the
      // request, if still running, is this cursor's own and goes on.
      if (running && running.key !== key) {
        running.cancel.cancel(); // the cursor is back here: the other one's items are no use
      }
      this._stopBackground(key);
      this._remember(key, cached); // most recently used last
      if (options.explicit && !cached.complete && !cancel?.isCancellationRequested) {
        // VS Code would drop our query again at `done` after this one (see the header).
        let listening: { dispose(): void } | undefined;
        await Promise.race([cached.ended, new Promise<void>(resolve => (listening = cancel?.onCancellationRequested(resolve)))]);
        listening?.dispose();
        if (cancel?.isCancellationRequested) {
          return { items: [], fields: cached.fields, at };
        }
      }
      return this._handOver(cached, at);
    }
    if (cached) {
      this._cache.delete(key); // its request was stopped: what it left is not the whole answer
    }
    running?.cancel.cancel();
    this._stopBackground(key);
    const mine = new LocalCancel(cancel);
    const request: IRunning = { key, cancel: mine };
    this._latestByCell.set(doc.cellId, request);
    const isLatest = () => this._latestByCell.get(doc.cellId) === request;
    let sent: CompletionFields;
    try {
      if (this._debounceMs > 0) {
        await new Promise(resolve => setTimeout(resolve, this._debounceMs));
      }
      if (mine.isCancellationRequested) {
        this._finish(request, doc.cellId, mine);
        return { items: [], fields: null, at };
      }
      const kernel = doc.notebook ? await this._source.kernelFor(doc.path) : null;
      sent = captureContext(doc, kernel);
      if (mine.isCancellationRequested) {
        this._finish(request, doc.cellId, mine);
        return { items: [], fields: sent, at };
      }
    } catch (reason) {
      this._finish(request, doc.cellId, mine);
      throw reason;
    }
    this._status.started();
    let end = () => undefined as void;
    const ended = new Promise<void>(resolve => (end = resolve));
    const entry: ICached = { fields: sent, items: [], handed: [], complete: false, answer: null, ended };
    let handOver: ((result: SpecgenCompletions.IResult) => void) | null = null;
    let failOver: (reason: unknown) => void = () => undefined;
    const result = new Promise<SpecgenCompletions.IResult>((resolve, reject) => {
      handOver = resolve;
      failOver = reject;
    });
    const answered = this._source.complete(sent, {
      timeoutMs: this._timeoutMs,
      cancel: mine,
      onProgress: progress => {
        if (isLatest()) {
          this._status.progressed(progress);
        }
      },
      onShown: item => {
        if (!isLatest() || mine.isCancellationRequested) {
          return;
        }
        entry.items.push(item); // VS Code gets them at `done` (see the header), or sooner when asked
        if (handOver) {
          // VS Code cancels its token once it has items (and with every later query): from now
          // on only a newer cursor in this cell stops the request.
          mine.detach();
          this._background = request;
          this._remember(key, entry);
          const give = handOver;
          handOver = null;
          give(this._handOver(entry, at, true));
        }
      }
    });
    void answered.then(
      answer => {
        if (isLatest()) {
          this._lastAnswer = answer;
          if (!answer.cancelled && !answer.error) {
            // The ranked list (the same items as the `shown` frames), after the one VS Code shows
            // now: VS Code shows the first of a new list, and the text on screen should not change
            // under the user's eyes (JupyterLab keeps it too).
            entry.items = keepFirst(entry.handed[0], answer.items);
            entry.complete = true;
          }
          entry.answer = answer;
          end(); // explicit queries waiting for the whole list take it first
          if (handOver) {
            // Nothing was shown before the end (none held up, an error, the standalone backend):
            // the final answer is the whole hand-over.
            this._status.finished(answer);
            if (entry.complete && entry.items.length) {
              this._remember(key, entry);
              entry.handed = [...entry.items];
            }
          } else {
            this._status.finished({ ...answer, items: entry.handed });
            if (!entry.complete) {
              this._cache.delete(key);
            } else if (!sameTexts(entry.handed, entry.items)) {
              this._askAgain(at, entry);
            }
          }
        } else {
          this._cache.delete(key);
        }
        end();
        this._finish(request, doc.cellId, mine);
        handOver?.({ items: answer.cancelled ? [] : answer.items, fields: sent, at });
      },
      reason => {
        // Sources answer failures as data; should one throw, VS Code hears of it if still waiting.
        this._finish(request, doc.cellId, mine);
        this._cache.delete(key);
        end();
        if (handOver) {
          failOver(reason);
        }
      }
    );
    return result;
  }

  /** The items of `entry` as VS Code gets them now; the status bar follows what it shows. */
  private _handOver(entry: ICached, at: ICursor, running = !entry.complete): SpecgenCompletions.IResult {
    entry.handed = [...entry.items];
    const answer = entry.answer ?? { items: [], summary: '', rejected: 0, model: '' };
    this._status.showing({ ...answer, items: entry.handed }, running);
    return { items: [...entry.handed], fields: entry.fields, at };
  }

  /** VS Code has fewer items than `done` gave for `at`: ask it to ask again (once: the header says why). */
  private _askAgain(at: ICursor, entry: ICached): void {
    // After the waiting explicit queries (they run first, on `ended`) have taken the list.
    setTimeout(() => {
      if (!sameTexts(entry.handed, entry.items)) {
        this._requery?.(at);
      }
    }, 0);
  }

  private _remember(key: string, entry: ICached): void {
    this._cache.delete(key);
    this._cache.set(key, entry);
    for (const old of this._cache.keys()) {
      if (this._cache.size <= CACHE_SIZE) {
        break;
      }
      this._cache.delete(old);
    }
  }

  /**
   * A request goes on after VS Code has its first items, out of reach of VS Code's token: any
   * query for another cursor, in any cell, stops it (only one cursor shows ghost text).
   */
  private _stopBackground(key: string): void {
    if (this._background && this._background.key !== key) {
      this._background.cancel.cancel();
      this._background = null;
    }
  }

  private _finish(request: IRunning, cellId: string, mine: LocalCancel): void {
    if (this._latestByCell.get(cellId) === request) {
      this._latestByCell.delete(cellId);
    }
    if (this._background === request) {
      this._background = null;
    }
    mine.dispose();
  }

  private _source: ISource;
  private _status: StatusModel;
  private _timeoutMs: number;
  private _debounceMs: number;
  private _requery: IRequery | null;
  private _lastAnswer: IAnswer | null = null;
  // The request in flight of each cell; a request for another cursor in it cancels it.
  private _latestByCell = new Map<string, IRunning>();
  // The request whose first items VS Code has, while it goes on validating the others.
  private _background: IRunning | null = null;
  // The items of recent cursors, least recently used first.
  private _cache = new Map<string, ICached>();
}

export namespace SpecgenCompletions {
  export interface IOptions {
    source: ISource;
    status: StatusModel;
    /** Milliseconds without any frame after which a request is abandoned. */
    timeoutMs?: number;
    /** Milliseconds to wait for typing to pause before sending (0 in the tests). */
    debounceMs?: number;
    /** Asks the editor to query the same cursor again when more items came for it. */
    requery?: IRequery;
  }

  export interface IProvideOptions {
    /**
     * VS Code was asked for the items (Alt+], editor.action.inlineSuggest.trigger: an Invoke
     * trigger), rather than the user typing.
     */
    explicit?: boolean;
  }

  export interface IResult {
    items: IItem[];
    /** What was sent (null when cancelled before): feedback reports are made against it. */
    fields: CompletionFields | null;
    /** The cursor the items are for. */
    at: ICursor;
  }
}

/** Cursors whose items are kept: a few, since only the cursor VS Code shows is asked again. */
const CACHE_SIZE = 8;

interface IRunning {
  key: string;
  cancel: LocalCancel;
}

interface ICached {
  fields: CompletionFields;
  /** What held up so far, in the order it came; once complete, `done`'s ranked list. */
  items: IItem[];
  /** What VS Code was last given. */
  handed: IItem[];
  /** `done` came: no more items will. */
  complete: boolean;
  /** The final answer, once it came (the status bar's summary). */
  answer: IAnswer | null;
  /** Resolves when the request ends, however it ends. */
  ended: Promise<void>;
}

function keyOf(at: ICursor): string {
  return `${at.cellId}\n${at.version}\n${at.offset}`;
}

function keepFirst(first: IItem | undefined, ranked: IItem[]): IItem[] {
  if (!first || !ranked.some(item => item.text === first.text)) {
    return ranked;
  }
  return [ranked.find(item => item.text === first.text)!, ...ranked.filter(item => item.text !== first.text)];
}

function sameTexts(a: readonly IItem[], b: readonly IItem[]): boolean {
  return a.length === b.length && a.every((item, index) => item.text === b[index].text);
}

/** Cancelled by VS Code's token (until detached) or by a newer request of the same cell. */
class LocalCancel implements ICancelSignal {
  constructor(parent?: ICancelSignal) {
    this._parent = parent?.onCancellationRequested(() => this.cancel()) ?? null;
    if (parent?.isCancellationRequested) {
      this._cancelled = true;
    }
  }

  get isCancellationRequested(): boolean {
    return this._cancelled;
  }

  onCancellationRequested(listener: () => void): { dispose(): void } {
    this._listeners.add(listener);
    return { dispose: () => this._listeners.delete(listener) };
  }

  cancel(): void {
    if (this._cancelled) {
      return;
    }
    this._cancelled = true;
    for (const listener of [...this._listeners]) {
      listener();
    }
  }

  /** VS Code's token no longer counts (it has the items; the request goes on for more). */
  detach(): void {
    this._parent?.dispose();
    this._parent = null;
  }

  dispose(): void {
    this.detach();
    this._listeners.clear();
  }

  private _parent: { dispose(): void } | null;
  private _listeners = new Set<() => void>();
  private _cancelled = false;
}
