// The provider without VS Code: for a cursor (seam.IDocumentSnapshot), the items to show, best
// first. It waits a little for typing to pause, finds the notebook's kernel on the server, sends
// the same context as the JupyterLab provider, stops the previous request of the same cell, and
// tells the status bar where things are. extension.ts turns the items into VS Code's
// InlineCompletionItems (several items: VS Code's inline suggestion toolbar cycles them).

import type { IItem } from '../../labextension/src/protocol';
import { captureContext, CompletionFields } from './context';
import type { ICancelSignal, IDocumentSnapshot } from './seam';
import type { IAnswer, ISource } from './source';
import type { StatusModel } from './status';

export class SpecgenCompletions {
  constructor(options: SpecgenCompletions.IOptions) {
    this._source = options.source;
    this._status = options.status;
    this._timeoutMs = options.timeoutMs ?? 15000;
    this._debounceMs = options.debounceMs ?? 250;
    this._status.setSource(this._source.status);
    this._source.onStatus(status => this._status.setSource(status));
  }

  /** The last answer (for the tests and the accept command). */
  get lastAnswer(): IAnswer | null {
    return this._lastAnswer;
  }

  /** The items for `doc`'s cursor, best first; [] when none held up, on error or cancel. */
  async provide(doc: IDocumentSnapshot, cancel?: ICancelSignal): Promise<SpecgenCompletions.IResult> {
    const mine = new LocalCancel(cancel);
    this._latestByCell.get(doc.cellId)?.cancel();
    this._latestByCell.set(doc.cellId, mine);
    try {
      if (this._debounceMs > 0) {
        await new Promise(resolve => setTimeout(resolve, this._debounceMs));
      }
      if (mine.isCancellationRequested) {
        return { items: [], fields: null };
      }
      const kernel = doc.notebook ? await this._source.kernelFor(doc.path) : null;
      const fields = captureContext(doc, kernel);
      if (mine.isCancellationRequested) {
        return { items: [], fields };
      }
      this._status.started();
      const answer = await this._source.complete(fields, {
        timeoutMs: this._timeoutMs,
        cancel: mine,
        onProgress: progress => {
          if (this._latestByCell.get(doc.cellId) === mine) {
            this._status.progressed(progress);
          }
        }
      });
      if (this._latestByCell.get(doc.cellId) === mine) {
        this._status.finished(answer);
        this._lastAnswer = answer;
      }
      return { items: answer.cancelled ? [] : answer.items, fields };
    } finally {
      if (this._latestByCell.get(doc.cellId) === mine) {
        this._latestByCell.delete(doc.cellId);
      }
      mine.dispose();
    }
  }

  /** The user took `text` from the items given for `fields`. */
  accepted(fields: CompletionFields, text: string): Promise<void> {
    return this._source.accepted(fields, text);
  }

  private _source: ISource;
  private _status: StatusModel;
  private _timeoutMs: number;
  private _debounceMs: number;
  private _lastAnswer: IAnswer | null = null;
  // The request in flight of each cell; a newer one cancels it.
  private _latestByCell = new Map<string, LocalCancel>();
}

export namespace SpecgenCompletions {
  export interface IOptions {
    source: ISource;
    status: StatusModel;
    /** Milliseconds without any frame after which a request is abandoned. */
    timeoutMs?: number;
    /** Milliseconds to wait for typing to pause before sending (0 in the tests). */
    debounceMs?: number;
  }

  export interface IResult {
    items: IItem[];
    /** What was sent (null when cancelled before): the accept command reports against it. */
    fields: CompletionFields | null;
  }
}

/** Cancelled by VS Code's token or by a newer request of the same cell, whichever comes first. */
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

  dispose(): void {
    this._parent?.dispose();
    this._listeners.clear();
  }

  private _parent: { dispose(): void } | null;
  private _listeners = new Set<() => void>();
  private _cancelled = false;
}
