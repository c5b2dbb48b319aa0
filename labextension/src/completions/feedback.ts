// Whether the user took a suggestion, reported to `POST specgen/feedback` so that personalization
// can learn from accepted suggestions and count dismissed ones.
//
// JupyterLab gives inline providers no accept or dismiss callback, so this is a heuristic:
//
// - The provider tells the tracker what it shows: the cumulative text of each chunk and the final
//   item of `done`, keyed by request id, with the request's path, cells, active index and prefix.
//   Only the latest request's text counts; one already reported is never reported again.
// - Accepted: the command `inline-completer:accept` (Tab, Alt End, the toolbar button) runs while
//   a suggestion is showing.
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

import { postFeedback } from '../personalize/api';
import { IFeedbackReport } from '../protocol';
import type { CompletionFields } from './context';

/** The command JupyterLab's inline completer runs to insert the ghost text. */
export const ACCEPT_COMMAND = 'inline-completer:accept';

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

  /** The suggestion now counted as showing, if any (for tests and debugging). */
  get showing(): Readonly<FeedbackTracker.IShown> | null {
    return this._showing;
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

  /** Request `id` shows `text` (cumulative: a chunk's text so far, or the final item). */
  shown(id: number, fields: CompletionFields, text: string): void {
    if (id <= this._lastSettledId) {
      return; // a reported request (later chunks) or an older one
    }
    if (!text) {
      if (this._showing?.id === id) {
        this._showing = null; // the final answer was empty: the streamed text is gone
      }
      return;
    }
    if (this._showing && id < this._showing.id) {
      return; // an older request than the one on screen
    }
    this._showing = { id, fields, text };
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._commands.commandExecuted.disconnect(this._onCommand, this);
    this._showing = null;
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
    this._lastSettledId = Math.max(this._lastSettledId, shown.id);
    const { path, prefix, cells, active } = shown.fields;
    const report: IFeedbackReport = {
      path,
      prefix,
      suggestion: shown.text,
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
    /** The text shown as ghost text. */
    text: string;
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
  return shown.text.startsWith(next.prefix.slice(old.length));
}
