// Whether the user took a suggestion, reported to `POST specgen/feedback` so that personalization
// can learn from the suggestions the user kept and count the ones turned down; and which
// suggestion is on screen, for the status bar.
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
//   a suggestion is showing; the item on screen is reported at once, with a key of its own, and
//   the server stores it as pending. Taking it is not yet a vote for it: when that cell next runs
//   (`NotebookActions.executionScheduled`, then `executed`), the same report goes again with `ran`,
//   the cell's text as it was sent to the kernel and whether the run succeeded; the server decides
//   whether it was kept (still there, ran cleanly: trained on), changed or raised (never trained
//   on).
//   A tab closed before the cell runs leaves it pending, which is never trained on.
// - Dismissed: only typed over or escaped (the rules and what is not a dismissal are in
//   settle.ts): typing text that diverges from the ghost text, or Escape. A request for another
//   cell, a prefix that no longer continues (cursor moved, text deleted), running the cell, typing
//   the suggestion through by hand, or a newer suggestion replacing it: not reported at all.
//
// Every report is fire-and-forget: a failed POST is logged, never thrown into the editor.

import type { Cell } from '@jupyterlab/cells';
import { NotebookActions } from '@jupyterlab/notebook';
import type { ServerConnection } from '@jupyterlab/services';
import type { CommandRegistry } from '@lumino/commands';
import { UUID } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { postFeedback } from '../personalize/api';
import { IFeedbackReport, IItem } from '../protocol';
import type { CompletionFields } from './context';
import { NEXT_COMMAND, onCommand, onRequest } from './settle';

export {
  ACCEPT_COMMAND,
  ESCAPE_COMMANDS,
  GONE_COMMANDS,
  NEXT_COMMAND,
  PREVIOUS_COMMAND
} from './settle';

/** Accepts waiting for their cell to run, kept at most (the oldest stay pending on the server). */
const MAX_PENDING_ACCEPTS = 200;

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
    NotebookActions.executionScheduled.connect(this._onScheduled, this);
    NotebookActions.executed.connect(this._onExecuted, this);
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
   * A new request is about to be sent: the suggestion on screen stays while the user types through
   * it, is dismissed when typed over, and is otherwise gone unreported (see settle.ts).
   */
  requested(fields: CompletionFields): void {
    const shown = this._showing;
    if (!shown) {
      return;
    }
    const verdict = onRequest(
      {
        path: shown.fields.path,
        cellId: shown.fields.cell_id,
        prefix: shown.fields.prefix,
        text: shown.items[shown.index].text
      },
      { path: fields.path, cellId: fields.cell_id, prefix: fields.prefix }
    );
    if (verdict === 'typed_over') {
      this._settle(false);
    } else if (verdict !== 'showing') {
      this._drop();
    }
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
      active: active ?? -1,
      // Like a whole accept, the part taken is pending until its cell runs (see the header).
      cell_id: shown.fields.cell_id,
      key: UUID.uuid4()
    };
    this._accepts.push({ report, ranSource: null });
    this._accepts.splice(0, this._accepts.length - MAX_PENDING_ACCEPTS);
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
    NotebookActions.executionScheduled.disconnect(this._onScheduled, this);
    NotebookActions.executed.disconnect(this._onExecuted, this);
    this._showing = null;
    this._accepts.length = 0;
    Signal.clearData(this);
  }

  private _onCommand(
    _: CommandRegistry,
    args: CommandRegistry.ICommandExecutedArgs
  ): void {
    if (!this._showing) {
      return;
    }
    switch (onCommand(args.id)) {
      case 'accept':
        this._settle(true);
        break;
      case 'cycle': {
        const shown = this._showing;
        const step = args.id === NEXT_COMMAND ? 1 : -1;
        const count = shown.items.length;
        shown.index = (shown.index + step + count) % count;
        this._currentChanged.emit(this.current);
        break;
      }
      case 'escape':
        this._settle(false);
        break;
      case 'gone':
        this._drop();
        break;
    }
  }

  /** A cell is sent to the kernel: what it sends is what an accepted suggestion is judged by. */
  private _onScheduled(_: unknown, args: { cell: Cell }): void {
    const id = args.cell.model.id;
    for (const accept of this._accepts) {
      if (accept.report.cell_id === id && accept.ranSource === null) {
        accept.ranSource = args.cell.model.sharedModel.getSource();
      }
    }
  }

  /** A cell ran: each accept waiting for it is reported again with its run (the server decides). */
  private _onExecuted(_: unknown, args: { cell: Cell; success: boolean }): void {
    const id = args.cell.model.id;
    const settled = this._accepts.filter(a => a.report.cell_id === id);
    if (!settled.length) {
      return;
    }
    this._accepts = this._accepts.filter(a => a.report.cell_id !== id);
    for (const accept of settled) {
      const source = accept.ranSource ?? args.cell.model.sharedModel.getSource();
      this._send({ ...accept.report, ran: { source, success: args.success } });
    }
  }

  /** The suggestion on screen is gone without being taken or turned down: nothing is reported. */
  private _drop(): void {
    const shown = this._showing;
    if (!shown) {
      return;
    }
    this._showing = null;
    this._currentChanged.emit(null);
    this._lastSettledId = Math.max(this._lastSettledId, shown.id);
  }

  private _settle(accepted: boolean): void {
    const shown = this._showing;
    if (!shown) {
      return;
    }
    this._drop();
    const { path, prefix, cells, active, cell_id } = shown.fields;
    const report: IFeedbackReport = {
      path,
      prefix,
      suggestion: shown.items[shown.index].text,
      accepted,
      cells: cells ?? [],
      active: active ?? -1,
      cell_id,
      key: accepted ? UUID.uuid4() : ''
    };
    if (accepted) {
      this._accepts.push({ report, ranSource: null });
      this._accepts.splice(0, this._accepts.length - MAX_PENDING_ACCEPTS);
    }
    this._send(report);
  }

  private _send(report: IFeedbackReport): void {
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
  // Accepted suggestions whose cell has not run since, oldest first, with the text the cell was
  // sent to the kernel with once it is scheduled.
  private _accepts: { report: IFeedbackReport; ranSource: string | null }[] = [];
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
