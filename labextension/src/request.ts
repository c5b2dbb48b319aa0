// One `complete` request as the browser sees it: the raw text streamed so far per candidate (only
// when the request asked for `stream`), the items that held up so far, and a queue of events read
// by the provider. No I/O: the connection feeds it.

import { IChunk, IDone, IErrorInfo, IItem, IProgress, IShown } from './protocol';

/**
 * A `complete` request in flight, settled exactly once by `done` or an error.
 */
export class CompletionRequest {
  constructor(id: number) {
    this.id = id;
  }

  /** The request number: increasing per tab; a newer request for a cell supersedes older ones. */
  readonly id: number;

  /** Whether the final event (done or error) has arrived. */
  get isSettled(): boolean {
    return this._settled;
  }

  /** The items that held up so far, in the order they did (the rank comes with `done`). */
  get shown(): readonly IItem[] {
    return this._shown;
  }

  /** The cumulative raw text of `candidate` so far. */
  text(candidate: number): string {
    return this._texts.get(candidate) ?? '';
  }

  /** Append a streamed delta. Ignored once settled (a stale reply). */
  addChunk(chunk: IChunk): void {
    if (this._settled) {
      return;
    }
    const text = this.text(chunk.candidate) + chunk.text;
    this._texts.set(chunk.candidate, text);
    this._push({ kind: 'chunk', candidate: chunk.candidate, text });
  }

  /** Where the server is with this request (not final). */
  addProgress(progress: IProgress): void {
    if (!this._settled) {
      this._push({ kind: 'progress', progress });
    }
  }

  /** A candidate that held up (not final). */
  addShown(shown: IShown): void {
    if (this._settled) {
      return;
    }
    this._shown.push(shown.item);
    this._push({ kind: 'shown', item: shown.item });
  }

  /** Deliver the final answer; every call after the first is ignored. */
  settle(result: IDone | IErrorInfo): void {
    if (this._settled) {
      return;
    }
    this._settled = true;
    this._push(
      'items' in result
        ? { kind: 'done', done: result }
        : { kind: 'error', error: result }
    );
  }

  /**
   * The next event, or `null` when none arrives within `timeoutMs` or after the final one was read.
   */
  async next(timeoutMs: number): Promise<CompletionRequest.Event | null> {
    if (this._queue.length === 0) {
      if (this._finalRead) {
        return null;
      }
      await new Promise<void>(resolve => {
        const timer = window.setTimeout(resolve, timeoutMs);
        this._wake = () => {
          window.clearTimeout(timer);
          resolve();
        };
      });
      this._wake = null;
    }
    const event = this._queue.shift() ?? null;
    if (event && (event.kind === 'done' || event.kind === 'error')) {
      this._finalRead = true;
    }
    return event;
  }

  private _push(event: CompletionRequest.Event): void {
    this._queue.push(event);
    this._wake?.();
  }

  private _texts = new Map<number, string>();
  private _shown: IItem[] = [];
  private _queue: CompletionRequest.Event[] = [];
  private _wake: (() => void) | null = null;
  private _settled = false;
  private _finalRead = false;
}

/**
 * A namespace for CompletionRequest statics.
 */
export namespace CompletionRequest {
  /**
   * What a request reports: raw text of a candidate (cumulative; only with `stream`), progress,
   * items that held up, then one final event.
   */
  export type Event =
    | { kind: 'chunk'; candidate: number; text: string }
    | { kind: 'progress'; progress: IProgress }
    | { kind: 'shown'; item: IItem }
    | { kind: 'done'; done: IDone }
    | { kind: 'error'; error: IErrorInfo };
}
