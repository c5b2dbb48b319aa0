// Whether the user took a suggestion, reported to `POST specgen/feedback` so that personalization
// can learn from accepted suggestions and count dismissed ones; and which suggestion is on screen,
// for the status bar.
//
// JupyterLab gives inline providers no accept, dismiss or cycle callback, so this is a heuristic:
//
// - The provider tells the tracker the list of items it gave JupyterLab for a request, best first
//   (`offered`), keyed by request id, with the request's path, cells, active index and prefix.
//   Only the latest request counts; one already reported is never reported again.
// - Which item is on screen mirrors JupyterLab's inline completer: item 0 of a fresh list;
//   `inline-completer:next`/`previous` move by one with wrap-around; a new list for the same
//   request keeps the item with the same text (as `InlineCompleter.Model.setCompletions` does),
//   or goes back to item 0 when that text is gone.
// - Accepted: the command `inline-completer:accept` (Tab, Alt End, the toolbar button) runs while
//   a suggestion is showing; the item on screen is the one reported.
// - Dismissed: a new request arrives that does not continue the suggestion, that is, it is for
//   another cell (the ghost text of the old one is gone), or its prefix does not start with the
//   old prefix, or the text typed since is not a prefix of the suggestion (typing through the
//   ghost text keeps it showing). Leaving the editor with a command (Escape enters command mode,
//   running the cell) also dismisses it.
// - A suggestion the user typed through and that a newer suggestion then replaced is not reported:
//   it was neither taken with Tab nor turned down.
//
// Every report is fire-and-forget: a failed POST is logged, never thrown into the editor.

import type { ServerConnection } from '@jupyterlab/services';
import type { CommandRegistry } from '@lumino/commands';
import type { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { postFeedback } from '../personalize/api';
import { IFeedbackReport, IItem } from '../protocol';
import type { CompletionFields } from './context';

/** The command JupyterLab's inline completer runs to insert the ghost text. */
export const ACCEPT_COMMAND = 'inline-completer:accept';

/** The commands that show the next and the previous item of the inline completion list. */
export const NEXT_COMMAND = 'inline-completer:next';
export const PREVIOUS_COMMAND = 'inline-completer:previous';

/** Commands that take the cursor out of the editor, removing the ghost text unaccepted. */
export const DISMISS_COMMANDS: ReadonlySet<string> = new Set([
  'notebook:enter-command-mode',
  'notebook:run-cell',
  'notebook:run-cell-and-select-next',
  'notebook:run-cell-and-insert-below'
]);

/**
 * Tracks the suggestion on screen and reports it once, as accepted or dismissed.
 */
export class FeedbackTracker implements IDisposable {
  constructor(options: FeedbackTracker.IOptions) {
    this._commands = options.commands;
    this._report =
      options.report ??
      ((report: IFeedbackReport) => postFeedback(options.serverSettings, report));
    this._commands.commandExecuted.connect(this._onCommand, this);
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** The suggestion now counted as showing, if any. */
  get showing(): Readonly<FeedbackTracker.IShown> | null {
    return this._showing;
  }

  /** The item on screen (the one Tab would insert), or null when none is. */
  get current(): IItem | null {
    const shown = this._showing;
    return shown ? shown.items[shown.index] : null;
  }

  /** Emits the item on screen whenever it changes (null: nothing is shown). */
  get currentChanged(): ISignal<this, IItem | null> {
    return this._currentChanged;
  }

  /**
   * A new request is about to be sent: the suggestion on screen is dismissed unless the new
   * request continues it (same cell, the text typed since being a prefix of the suggestion).
   */
  requested(fields: CompletionFields): void {
    const shown = this._showing;
    if (!shown || continues(shown, fields)) {
      return;
    }
    this._settle(false);
  }

  /**
   * Request `id` now shows `items` (the list given to JupyterLab, best first; for raw streamed
   * text, one item with its text so far). An empty list: the request shows nothing (any more).
   */
  offered(id: number, fields: CompletionFields, items: readonly IItem[]): void {
    if (id <= this._lastSettledId) {
      return; // a reported request (later updates) or an older one
    }
    const previous = this._showing;
    if (items.length === 0) {
      if (previous?.id === id) {
        this._showing = null; // the final answer was empty: the streamed text is gone
        this._currentChanged.emit(null);
      }
      return;
    }
    if (previous && id < previous.id) {
      return; // an older request than the one on screen
    }
    let index = 0;
    if (previous?.id === id) {
      const kept = items.findIndex(
        item => item.text === previous.items[previous.index].text
      );
      index = kept >= 0 ? kept : 0;
    }
    this._showing = { id, fields, items: [...items], index };
    this._currentChanged.emit(this.current);
  }

  /**
   * `acceptedText`, a part of the suggestion on screen, was just typed into its cell after
   * `prefix` (accept next word / accept line, partial.ts): report that part as a partial accept.
   * The suggestion stays unreported: what remains of it is still on screen (the provider offers
   * it again with the longer prefix) and is reported as usual when it is taken or turned down.
   */
  recordPartialAccept(prefix: string, acceptedText: string): void {
    const shown = this._showing;
    if (!shown || !acceptedText) {
      return;
    }
    const { path, cells, active } = shown.fields;
    const report: IFeedbackReport = {
      path,
      prefix,
      suggestion: acceptedText,
      accepted: true,
      partial: true,
      cells: cells ?? [],
      active: active ?? -1
    };
    this._report(report).catch(reason =>
      console.warn('[specgen] could not report a partial accept', reason)
    );
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._commands.commandExecuted.disconnect(this._onCommand, this);
    this._showing = null;
    Signal.clearData(this);
  }

  private _onCommand(
    _: CommandRegistry,
    args: CommandRegistry.ICommandExecutedArgs
  ): void {
    if (!this._showing) {
      return;
    }
    if (args.id === ACCEPT_COMMAND) {
      this._settle(true);
    } else if (args.id === NEXT_COMMAND || args.id === PREVIOUS_COMMAND) {
      const shown = this._showing;
      const step = args.id === NEXT_COMMAND ? 1 : -1;
      const count = shown.items.length;
      shown.index = (shown.index + step + count) % count;
      this._currentChanged.emit(this.current);
    } else if (DISMISS_COMMANDS.has(args.id)) {
      this._settle(false);
    }
  }

  private _settle(accepted: boolean): void {
    const shown = this._showing;
    if (!shown) {
      return;
    }
    this._showing = null;
    this._currentChanged.emit(null);
    this._lastSettledId = Math.max(this._lastSettledId, shown.id);
    const { path, prefix, cells, active } = shown.fields;
    const report: IFeedbackReport = {
      path,
      prefix,
      suggestion: shown.items[shown.index].text,
      accepted,
      cells: cells ?? [],
      active: active ?? -1
    };
    this._report(report).catch(reason =>
      console.warn('[specgen] could not report feedback', reason)
    );
  }

  private _commands: CommandRegistry;
  private _report: (report: IFeedbackReport) => Promise<void>;
  // The suggestion on screen and not yet reported.
  private _showing: FeedbackTracker.IShown | null = null;
  // The newest request already reported: its later chunks (or older requests) are not shown again.
  private _lastSettledId = 0;
  private _currentChanged = new Signal<this, IItem | null>(this);
  private _isDisposed = false;
}

/**
 * A namespace for FeedbackTracker statics.
 */
export namespace FeedbackTracker {
  export interface IOptions {
    /** The application's commands, watched for the accept command. */
    commands: CommandRegistry;
    /** Where to POST reports. */
    serverSettings: ServerConnection.ISettings;
    /** Replaces the POST (tests). */
    report?: (report: IFeedbackReport) => Promise<void>;
  }

  /** A suggestion on screen. */
  export interface IShown {
    /** The request that produced it. */
    id: number;
    /** The request's context: cell, path, notebook and prefix. */
    fields: CompletionFields;
    /** The items JupyterLab holds for it, best first. */
    items: IItem[];
    /** Which of them is on screen (JupyterLab's own index, mirrored). */
    index: number;
  }
}

/** Whether `next` (a new request) keeps `shown` on screen: typing through the ghost text. */
function continues(shown: FeedbackTracker.IShown, next: CompletionFields): boolean {
  if (next.cell_id !== shown.fields.cell_id || next.path !== shown.fields.path) {
    return false;
  }
  const old = shown.fields.prefix;
  if (!next.prefix.startsWith(old)) {
    return false;
  }
  return shown.items[shown.index].text.startsWith(next.prefix.slice(old.length));
}
