// The inline completion provider: JupyterLab calls `fetch` (debounced by its own settings), we
// send `complete` and answer at once with an empty, incomplete item whose token is the request
// id; JupyterLab then calls `stream(token)`, which yields the cumulative text of candidate 0 as
// it arrives and finally the best ranked item of `done`. What is shown goes to the feedback
// tracker, which reports whether the user took it (see feedback.ts).

import type {
  CompletionHandler,
  IInlineCompletionContext,
  IInlineCompletionItem,
  IInlineCompletionList,
  IInlineCompletionProvider
} from '@jupyterlab/completer';
import type { ISettingRegistry } from '@jupyterlab/settingregistry';
import type { JSONValue } from '@lumino/coreutils';
import { ISignal, Signal } from '@lumino/signaling';

import { SpecgenConnection } from '../connection';
import { IItem } from '../protocol';
import { CompletionRequest } from '../request';
import { captureContext, CompletionFields } from './context';
import { FeedbackTracker } from './feedback';

/**
 * Inline completions from the specgen server extension.
 */
export class SpecgenInlineProvider implements IInlineCompletionProvider {
  constructor(options: SpecgenInlineProvider.IOptions) {
    this._connection = options.connection;
    this._feedback = options.feedback ?? null;
  }

  readonly identifier = SpecgenInlineProvider.IDENTIFIER;
  readonly name = 'Specgen';

  /**
   * Settings shown under the inline completer's providers. JupyterLab merges `default` under
   * the user's values: enabled out of the box, so installing the package is the only step.
   */
  get schema(): ISettingRegistry.IProperty {
    return {
      properties: {},
      default: { ...SpecgenInlineProvider.DEFAULT_SETTINGS }
    };
  }

  /** Emits the final answer of each request that was still current when it arrived. */
  get completed(): ISignal<this, SpecgenInlineProvider.ICompleted> {
    return this._completed;
  }

  /** Emits when a new request starts (the previous verdict no longer applies). */
  get started(): ISignal<this, number> {
    return this._started;
  }

  configure(settings: { [property: string]: JSONValue }): void {
    const timeout = settings.timeout;
    if (typeof timeout === 'number' && timeout > 0) {
      this._timeout = timeout;
    }
  }

  async fetch(
    request: CompletionHandler.IRequest,
    context: IInlineCompletionContext
  ): Promise<IInlineCompletionList<IInlineCompletionItem>> {
    const fields = captureContext(request, context);
    this._feedback?.requested(fields);
    // A newer keystroke in the same cell makes the older request stale: stop it on both ends.
    const previous = this._latestByCell.get(fields.cell_id);
    if (previous) {
      this._connection.cancel(previous.id);
      this._streams.delete(previous.id);
    }
    const pending = this._connection.complete(fields);
    this._latestByCell.set(fields.cell_id, pending);
    this._streams.set(pending.id, { request: pending, fields });
    this._started.emit(pending.id);
    return {
      items: [{ insertText: '', isIncomplete: true, token: String(pending.id) }]
    };
  }

  async *stream(
    token: string
  ): AsyncGenerator<{ response: IInlineCompletionItem }, undefined, undefined> {
    const id = Number(token);
    const entry = this._streams.get(id);
    if (!entry) {
      return undefined; // superseded before JupyterLab asked for the stream
    }
    const { request, fields } = entry;
    const cellId = fields.cell_id;
    try {
      for (;;) {
        const event = await request.next(this._timeout);
        if (event === null) {
          // Silence for longer than the provider timeout: give up and free the backend.
          this._connection.cancel(id);
          return undefined;
        }
        if (event.kind === 'chunk') {
          if (event.candidate === 0) {
            this._feedback?.shown(id, fields, event.text);
            yield { response: { insertText: event.text, isIncomplete: true, token } };
          }
          continue;
        }
        if (event.kind === 'done') {
          const best: IItem | undefined = event.done.items[0];
          this._completed.emit({ id, item: best ?? null, model: event.done.model });
          this._feedback?.shown(id, fields, best?.text ?? '');
          yield {
            response: { insertText: best?.text ?? '', isIncomplete: false, token }
          };
          return undefined;
        }
        if (event.error.type !== 'cancelled') {
          this._completed.emit({ id, item: null, error: event.error.message });
          yield {
            response: {
              insertText: request.text(0),
              isIncomplete: false,
              token,
              error: { message: event.error.message }
            }
          };
        }
        return undefined;
      }
    } finally {
      this._streams.delete(id);
      if (this._latestByCell.get(cellId) === request) {
        this._latestByCell.delete(cellId);
      }
    }
  }

  private _connection: SpecgenConnection;
  private _feedback: FeedbackTracker | null;
  private _timeout = SpecgenInlineProvider.DEFAULT_SETTINGS.timeout;
  // The current request of each cell; any other request of that cell is stale.
  private _latestByCell = new Map<string, CompletionRequest>();
  // Requests whose stream JupyterLab has yet to read to the end, by id.
  private _streams = new Map<
    number,
    { request: CompletionRequest; fields: CompletionFields }
  >();
  private _completed = new Signal<this, SpecgenInlineProvider.ICompleted>(this);
  private _started = new Signal<this, number>(this);
}

/**
 * A namespace for SpecgenInlineProvider statics.
 */
export namespace SpecgenInlineProvider {
  export const IDENTIFIER = 'specgen';

  export interface IOptions {
    /** The tab's websocket to the server extension. */
    connection: SpecgenConnection;
    /** Told what is shown, to report whether the user took it; none: no feedback. */
    feedback?: FeedbackTracker;
  }

  /** The settings JupyterLab keeps for every inline provider, with our defaults. */
  export interface ISettings {
    enabled: boolean;
    /** Milliseconds since the last key press before a request is sent. */
    debouncerDelay: number;
    /** Milliseconds without any reply after which a request is abandoned (CPU models are slow). */
    timeout: number;
    /** Complete in the middle of a line: the server sends the suffix to the model (FIM). */
    autoFillInMiddle: boolean;
  }

  export const DEFAULT_SETTINGS: ISettings = {
    enabled: true,
    debouncerDelay: 250,
    timeout: 15000,
    autoFillInMiddle: true
  };

  /** The final answer of a request, for the status bar. */
  export interface ICompleted {
    id: number;
    /** The best item (shown as ghost text), or null when none came or the request failed. */
    item: IItem | null;
    model?: string;
    error?: string;
  }
}
