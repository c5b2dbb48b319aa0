// The inline completion provider: JupyterLab calls `fetch` (debounced by its own settings) and we
// send `complete`. By default nothing reaches the screen before the server says it held up:
//
// - `fetch` waits for the first `shown` item (or for `done`, an error or the timeout) and answers
//   with complete items only. An item that is still empty or still streaming would be drawn by
//   JupyterLab as a blank ghost and counted in its N-of-M widget, and JupyterLab offers no way to
//   take an item out of the list once `fetch` has answered; so no placeholder is ever given.
// - JupyterLab reads a provider's list once per fetch (later items cannot be appended to it), so
//   when more items hold up after the first one, or `done` brings them in ranked order, we ask
//   JupyterLab to fetch again (`inline-completer:invoke`) while the editor is still exactly where
//   the request was made, and answer that fetch from what this request already has, without a new
//   request. JupyterLab's `setCompletions` keeps the item on screen by its text, so the ghost text
//   does not jump: the list grows under it (its N-of-M counter and Alt+] / Alt+[ cycle it) and is
//   ordered best first once `done` arrives.
// - With the provider setting `streamUnvalidated` (off by default) the request asks for raw
//   `chunk`s and the first item streams candidate 0's raw text as before (JupyterLab's `stream`
//   protocol: an incomplete item with a token), replaced by the first item that held up, then by
//   the best at `done`. When none held up its text is emptied; JupyterLab keeps the empty item
//   (counted "1/1") until the next keystroke, the price of asking for raw text.
//
// What is on screen goes to the feedback tracker, which reports whether the user took it (see
// feedback.ts); progress and the reason nothing is shown go to the status bar.

import {
  CompletionHandler,
  IInlineCompletionContext,
  IInlineCompletionItem,
  IInlineCompletionList,
  IInlineCompletionProvider,
  InlineCompletionTriggerKind
} from '@jupyterlab/completer';
import type { ISettingRegistry } from '@jupyterlab/settingregistry';
import type { CommandRegistry } from '@lumino/commands';
import type { JSONValue } from '@lumino/coreutils';
import { ISignal, Signal } from '@lumino/signaling';

import { SpecgenConnection } from '../connection';
import { IDone, IItem, IProgress } from '../protocol';
import { CompletionRequest } from '../request';
import { captureContext, CompletionFields } from './context';
import { FeedbackTracker } from './feedback';

/** The command that makes JupyterLab fetch inline completions for the current editor now. */
export const INVOKE_COMMAND = 'inline-completer:invoke';

/**
 * Inline completions from the specgen server extension.
 */
export class SpecgenInlineProvider implements IInlineCompletionProvider {
  constructor(options: SpecgenInlineProvider.IOptions) {
    this._connection = options.connection;
    this._feedback = options.feedback ?? null;
    this._commands = options.commands ?? null;
  }

  readonly identifier = SpecgenInlineProvider.IDENTIFIER;
  readonly name = 'Specgen';

  /**
   * Settings shown under the inline completer's providers. JupyterLab merges `default` under
   * the user's values: enabled out of the box, so installing the package is the only step.
   */
  get schema(): ISettingRegistry.IProperty {
    return {
      properties: {
        streamUnvalidated: {
          title: 'Stream unvalidated text',
          description:
            'Show the raw text of a suggestion while the model writes it, before it was run in ' +
            'a fork of the kernel (faster, but it may not run). Off: only suggestions that held ' +
            'up are shown.',
          type: 'boolean'
        }
      },
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

  /** Emits where the current request is (generating, validating 2/3). */
  get progressed(): ISignal<this, IProgress> {
    return this._progressed;
  }

  /** Whether raw candidate text is shown before validation (the `streamUnvalidated` setting). */
  get streamUnvalidated(): boolean {
    return this._streamUnvalidated;
  }

  configure(settings: { [property: string]: JSONValue }): void {
    const timeout = settings.timeout;
    if (typeof timeout === 'number' && timeout > 0) {
      this._timeout = timeout;
    }
    this._streamUnvalidated = settings.streamUnvalidated === true;
  }

  async fetch(
    request: CompletionHandler.IRequest,
    context: IInlineCompletionContext
  ): Promise<IInlineCompletionList<IInlineCompletionItem>> {
    const fields = captureContext(request, context);
    this._feedback?.requested(fields);
    const again = this._takeRefresh(fields, context);
    if (again) {
      // JupyterLab fetches again because we asked it to: the items this request has by now.
      this._feedback?.offered(again.id, fields, again.items);
      return { items: again.items.map(toInline) };
    }
    // A newer keystroke in the same cell makes the older request stale: stop it on both ends.
    const previous = this._latestByCell.get(fields.cell_id);
    if (previous) {
      previous.superseded = true;
      this._connection.cancel(previous.request.id);
      this._streams.delete(previous.request.id);
    }
    const stream = this._streamUnvalidated;
    const pending = this._connection.complete({ ...fields, stream });
    const entry: Private.IEntry = {
      request: pending,
      fields,
      editor: editorOf(context),
      offered: [],
      superseded: false
    };
    this._latestByCell.set(fields.cell_id, entry);
    this._started.emit(pending.id);
    if (stream) {
      this._streams.set(pending.id, entry);
      return {
        items: [
          { insertText: '', isIncomplete: true, token: String(pending.id) }
        ]
      };
    }
    const first = await this._firstItems(entry);
    if (first.length > 0 && entry.superseded) {
      // A newer request of the cell came meanwhile: JupyterLab drops this answer, so it is
      // never on screen (a first item and `done` can arrive just before the cancel does).
      return { items: [] };
    }
    entry.offered = first;
    this._feedback?.offered(pending.id, fields, first);
    return { items: first.map(toInline) };
  }

  async *stream(
    token: string
  ): AsyncGenerator<{ response: IInlineCompletionItem }, undefined, undefined> {
    const id = Number(token);
    const entry = this._streams.get(id);
    if (!entry) {
      return undefined; // superseded before JupyterLab asked for the stream
    }
    this._streams.delete(id);
    const { request, fields } = entry;
    try {
      for (;;) {
        const event = await request.next(this._timeout);
        if (event === null) {
          this._timedOut(entry);
          return undefined;
        }
        switch (event.kind) {
          case 'progress':
            this._progress(entry, event.progress);
            continue;
          case 'chunk':
            // Raw text is only ever shown until the first item that held up replaces it.
            if (event.candidate === 0 && request.shown.length === 0) {
              this._feedback?.offered(id, fields, [rawItem(event.text)]);
              yield {
                response: { insertText: event.text, isIncomplete: true, token }
              };
            }
            continue;
          case 'shown':
            if (request.shown.length === 1) {
              entry.offered = [event.item];
              this._feedback?.offered(id, fields, entry.offered);
              yield {
                response: {
                  insertText: event.item.text,
                  isIncomplete: true,
                  token
                }
              };
            }
            continue;
          case 'done': {
            const best = event.done.items[0];
            entry.offered = best ? [best] : [];
            this._feedback?.offered(id, fields, entry.offered);
            this._finished(entry, event.done);
            yield {
              response: { insertText: best?.text ?? '', isIncomplete: false, token }
            };
            // The others join the list as in the validated path (see the top of this file).
            this._refresh(entry, event.done.items);
            return undefined;
          }
          case 'error':
            this._failed(entry, event.error.type, event.error.message);
            this._feedback?.offered(id, fields, []);
            yield { response: { insertText: '', isIncomplete: false, token } };
            return undefined;
        }
      }
    } finally {
      this._forget(entry);
    }
  }

  /**
   * Read `entry`'s events until the first item held up (or `done` came): the items to answer
   * `fetch` with. The rest of the request is read on in the background by `_follow`.
   */
  private async _firstItems(entry: Private.IEntry): Promise<IItem[]> {
    const { request } = entry;
    for (;;) {
      const event = await request.next(this._timeout);
      if (event === null) {
        this._timedOut(entry);
        this._forget(entry);
        return [];
      }
      switch (event.kind) {
        case 'progress':
          this._progress(entry, event.progress);
          continue;
        case 'chunk':
          continue; // not asked for; never shown unvalidated
        case 'shown':
          void this._follow(entry);
          return [event.item];
        case 'done':
          this._finished(entry, event.done);
          this._forget(entry);
          return event.done.items;
        case 'error':
          this._failed(entry, event.error.type, event.error.message);
          this._forget(entry);
          return [];
      }
    }
  }

  /** After `fetch` answered with the first item: grow JupyterLab's list as more hold up. */
  private async _follow(entry: Private.IEntry): Promise<void> {
    const { request } = entry;
    try {
      for (;;) {
        const event = await request.next(this._timeout);
        if (event === null) {
          this._timedOut(entry);
          return;
        }
        switch (event.kind) {
          case 'progress':
            this._progress(entry, event.progress);
            continue;
          case 'chunk':
            continue;
          case 'shown':
            this._refresh(entry, [...request.shown]);
            continue;
          case 'done':
            this._finished(entry, event.done);
            this._refresh(entry, event.done.items);
            return;
          case 'error':
            // The item on screen held up; a later failure (a cancel, a lost socket) keeps it.
            this._failed(entry, event.error.type, event.error.message);
            return;
        }
      }
    } finally {
      this._forget(entry);
    }
  }

  /**
   * Have JupyterLab fetch `items` for `entry` if they differ from what it has and the editor is
   * still exactly where the request was made (any keystroke since starts a request of its own).
   */
  private _refresh(entry: Private.IEntry, items: IItem[]): void {
    if (!this._commands || items.length === 0 || sameTexts(items, entry.offered)) {
      return;
    }
    if (!stillAt(entry)) {
      return;
    }
    entry.offered = items;
    this._fetchAgain({ id: entry.request.id, fields: entry.fields, items });
  }

  /**
   * Show `items` where `fields` says the cursor now is, without a new request: what remains of
   * request `id`'s suggestion after part of it was typed in (partial.ts). It held up as a whole.
   */
  showAgain(id: number, fields: CompletionFields, items: IItem[]): void {
    if (this._commands && items.length > 0) {
      this._fetchAgain({ id, fields, items });
    }
  }

  /** Have JupyterLab fetch now, and answer that fetch with `refresh`. */
  private _fetchAgain(refresh: Private.IRefresh): void {
    this._pendingRefresh = refresh;
    // JupyterLab calls `fetch` synchronously inside the command, so the refresh is taken by now;
    // one left over would answer a later, unrelated fetch.
    this._commands
      ?.execute(INVOKE_COMMAND)
      .catch(reason =>
        console.warn('[specgen] could not show more suggestions', reason)
      );
    this._pendingRefresh = null;
  }

  /** The items of a refresh we asked for, when `fields` is that request's place; else null. */
  private _takeRefresh(
    fields: CompletionFields,
    context: IInlineCompletionContext
  ): Private.IRefresh | null {
    const refresh = this._pendingRefresh;
    this._pendingRefresh = null;
    if (
      !refresh ||
      context.triggerKind !== InlineCompletionTriggerKind.Invoke ||
      refresh.fields.cell_id !== fields.cell_id ||
      refresh.fields.path !== fields.path ||
      refresh.fields.prefix !== fields.prefix ||
      refresh.fields.suffix !== fields.suffix
    ) {
      return null;
    }
    return refresh;
  }

  /** Progress of the cell's current request only: a superseded one's would mislead. */
  private _progress(entry: Private.IEntry, progress: IProgress): void {
    if (this._isCurrent(entry)) {
      this._progressed.emit(progress);
    }
  }

  private _finished(entry: Private.IEntry, done: IDone): void {
    if (this._isCurrent(entry)) {
      this._completed.emit({
        id: entry.request.id,
        items: done.items,
        summary: done.summary,
        rejected: done.rejected,
        model: done.model
      });
    }
  }

  private _failed(entry: Private.IEntry, type: string, message: string): void {
    if (type !== 'cancelled' && this._isCurrent(entry)) {
      this._completed.emit({
        id: entry.request.id,
        items: [],
        summary: '',
        rejected: 0,
        error: message
      });
    }
  }

  /** Silence for longer than the provider timeout: give up and free the backend. */
  private _timedOut(entry: Private.IEntry): void {
    const current = this._isCurrent(entry);
    this._connection.cancel(entry.request.id);
    if (current) {
      this._completed.emit({
        id: entry.request.id,
        items: [],
        summary: '',
        rejected: 0,
        error: `no answer within ${Math.round(this._timeout / 1000)} s`
      });
    }
  }

  private _isCurrent(entry: Private.IEntry): boolean {
    return this._latestByCell.get(entry.fields.cell_id) === entry;
  }

  private _forget(entry: Private.IEntry): void {
    this._streams.delete(entry.request.id);
    if (this._isCurrent(entry) && entry.request.isSettled) {
      this._latestByCell.delete(entry.fields.cell_id);
    }
  }

  private _connection: SpecgenConnection;
  private _feedback: FeedbackTracker | null;
  private _commands: CommandRegistry | null;
  private _timeout = SpecgenInlineProvider.DEFAULT_SETTINGS.timeout;
  private _streamUnvalidated =
    SpecgenInlineProvider.DEFAULT_SETTINGS.streamUnvalidated;
  // The current request of each cell; any other request of that cell is stale.
  private _latestByCell = new Map<string, Private.IEntry>();
  // Streaming requests whose stream JupyterLab has yet to open, by id.
  private _streams = new Map<number, Private.IEntry>();
  // The items to answer the fetch we asked JupyterLab for, if one is pending.
  private _pendingRefresh: Private.IRefresh | null = null;
  private _completed = new Signal<this, SpecgenInlineProvider.ICompleted>(this);
  private _started = new Signal<this, number>(this);
  private _progressed = new Signal<this, IProgress>(this);
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
    /**
     * The application's commands, to have JupyterLab fetch again when more items held up;
     * none: only the first item that held up (or all of them, when `done` comes first) is shown.
     */
    commands?: CommandRegistry;
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
    /** Show raw candidate text as it is generated, before validation. */
    streamUnvalidated: boolean;
  }

  export const DEFAULT_SETTINGS: ISettings = {
    enabled: true,
    debouncerDelay: 250,
    timeout: 15000,
    autoFillInMiddle: true,
    streamUnvalidated: false
  };

  /** The final answer of a request, for the status bar. */
  export interface ICompleted {
    id: number;
    /** Every item that held up, best first; empty when none did or the request failed. */
    items: IItem[];
    /** Why nothing is shown, in words (the server's `done.summary`). */
    summary: string;
    /** Candidates that did not hold up. */
    rejected: number;
    model?: string;
    error?: string;
  }
}

namespace Private {
  /** A request and where it was made. */
  export interface IEntry {
    request: CompletionRequest;
    fields: CompletionFields;
    /** The editor it was made in, to tell whether it is still there when more items come. */
    editor: IEditorLike | null;
    /** The items JupyterLab was last given for this request. */
    offered: IItem[];
    /** Whether a newer request of the same cell replaced it. */
    superseded: boolean;
  }

  /** A fetch we asked JupyterLab for, and the items to answer it with. */
  export interface IRefresh {
    /** The request the items came from. */
    id: number;
    fields: CompletionFields;
    items: IItem[];
  }

  /** The part of JupyterLab's CodeEditor.IEditor we read (typed here to avoid a dependency). */
  export interface IEditorLike {
    hasFocus(): boolean;
    getCursorPosition(): { line: number; column: number };
    getOffsetAt(position: { line: number; column: number }): number;
    model: { sharedModel: { getSource(): string } };
  }
}

type IEditorLike = Private.IEditorLike;

function editorOf(context: IInlineCompletionContext): IEditorLike | null {
  // The reconciliator passes its whole completion context, which has the editor, though the
  // inline context's type does not declare it.
  const editor = (context as { editor?: IEditorLike | null }).editor;
  return editor ?? null;
}

/** Whether the editor of `entry` has focus and holds the same text, cursor at the same place. */
function stillAt(entry: Private.IEntry): boolean {
  const editor = entry.editor;
  if (!editor || !editor.hasFocus()) {
    return false;
  }
  const { prefix, suffix = '' } = entry.fields;
  const source = editor.model.sharedModel.getSource();
  if (source !== prefix + suffix) {
    return false;
  }
  return editor.getOffsetAt(editor.getCursorPosition()) === prefix.length;
}

function toInline(item: IItem): IInlineCompletionItem {
  return { insertText: item.text, isIncomplete: false };
}

/** Raw streamed text, for the feedback tracker and the status bar. */
function rawItem(text: string): IItem {
  return {
    text,
    verdict: 'not_validated',
    detail: 'raw text, not run yet (the streamUnvalidated setting)',
    score: 0,
    adapter: ''
  };
}

function sameTexts(a: readonly IItem[], b: readonly IItem[]): boolean {
  return a.length === b.length && a.every((item, i) => item.text === b[i].text);
}
