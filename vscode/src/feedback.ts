// What the user did with the suggestions, reported to the server's feedback store as JupyterLab
// reports it (labextension/src/completions/feedback.ts), with the same message
// (`IFeedbackReport` of the generated protocol module).
//
// VS Code's stable API tells an extension one thing only: an item was accepted whole (its
// `command` runs after the edit). It does not say that one was dismissed, nor that a part was
// taken (Accept Next Word, Accept Line). So the rest is inferred from the edits made where the
// items were given, and the rules of what counts are JupyterLab's (settle.ts `onRequest`, the
// same function):
//
// - The provider's items for a cursor are `offered` (only the latest cursor counts). `taken` is
//   the text inserted at that place since, as long as every edit lands at its end.
// - An edit there that makes `taken` a strict start of an item keeps them showing. When it was
//   one insertion of two characters or more, it is reported as a *partial accept* of what it
//   inserted (prefix: the text before it). One character is indistinguishable from typing it
//   (and Accept Word of a one-character word, such as `(`, from typing it): not reported.
// - An edit that makes `taken` an item's whole text: accepted (Tab) or typed by hand; not reported
//   here. The item's command reports the accept, of what was not already reported as partial:
//   the rest of the item at the longer prefix. So nothing is counted twice. When `taken` is also
//   the start of a longer item (`len` and `len(numbers)`), the insertion is Tab on the one or
//   Accept Word on the other: it is a partial accept unless the command of the one comes first
//   (VS Code runs it right after the edit): within `settleMs`, before any other edit or items.
// - An edit there that leaves `taken` a start of no item, nor running past one: *typed over*, a
//   dismissal of the item on screen, reported. VS Code shows only items that still fit what was
//   typed, so the item on screen is taken to be the first that fits the text typed before.
// - Typing an item through and on, an edit elsewhere (another place, another cell, several
//   cursors), the cursor moving away, or newer items replacing these: gone, not reported. Nor is
//   Escape, which VS Code does not tell an extension about. (Nor does JupyterLab count a request
//   elsewhere as a dismissal: jupyter_specgen/personalize/feedback.py says why.)

import { randomUUID } from 'node:crypto';

import { onRequest } from '../../labextension/src/completions/settle';
import type { IFeedbackReport, IItem } from '../../labextension/src/protocol';
import type { CompletionFields } from './context';

/** One change of a document, as VS Code's TextDocumentContentChangeEvent has it (before the change). */
export interface ITextChange {
  /** Where the replaced range starts (`rangeOffset`). */
  offset: number;
  /** How long the replaced range is (`rangeLength`). */
  removed: number;
  /** What replaced it. */
  text: string;
}

export class FeedbackTracker {
  constructor(options: FeedbackTracker.IOptions) {
    this._report = options.report;
    this._settleMs = options.settleMs ?? 1000;
  }

  /** The items counted as showing, if any. */
  get showing(): Readonly<FeedbackTracker.IShown> | null {
    return this._showing;
  }

  /**
   * VS Code was given `items` for the cursor at `offset` of cell `cellId` (the request's
   * `fields`). The same cursor again (more items came for it) keeps what was taken since.
   */
  offered(at: { cellId: string; offset: number }, fields: CompletionFields | null, items: readonly IItem[]): void {
    this._flush();
    const shown = this._showing;
    if (shown && shown.cellId === at.cellId && shown.offset === at.offset && shown.fields === fields) {
      shown.items = [...items];
      return;
    }
    if (!fields || items.length === 0) {
      if (shown?.cellId === at.cellId) {
        this._drop(); // VS Code replaces what it showed there with nothing
      }
      return;
    }
    this._drop();
    this._showing = { cellId: at.cellId, offset: at.offset, fields, items: [...items], taken: '', previous: '' };
  }

  /** Cell (or file) `cellId` changed by `changes` (one event of VS Code's onDidChangeTextDocument). */
  changed(cellId: string, changes: readonly ITextChange[]): void {
    this._flush(); // an edit after an undecided one: no accept came, so that one was partial
    const shown = this._showing;
    if (!shown || shown.cellId !== cellId || changes.length === 0) {
      return;
    }
    const taken = changes.length === 1 ? takenAfter(shown, changes[0]) : null;
    if (taken === null) {
      this._drop(); // an edit elsewhere, or several at once
      return;
    }
    const { path, cell_id, prefix } = shown.fields;
    const before = shown.taken;
    const inserted = changes[0].removed === 0 && taken.startsWith(before) ? taken.slice(before.length) : '';
    const partial = inserted.length >= MIN_PARTIAL ? this._reportOf(shown.fields, prefix + before, inserted, true, true) : null;
    shown.previous = before;
    shown.taken = taken;
    const longer = shown.items.some(item => item.text.length > taken.length && item.text.startsWith(taken));
    if (shown.items.some(item => item.text === taken)) {
      if (partial && longer) {
        // Tab on the item `taken` now is, or Accept Word / Line of a longer one: that item's
        // command, which VS Code runs right after the edit, is the only difference.
        const timer = setTimeout(() => this._flush(), this._settleMs);
        timer.unref?.();
        this._pending = { shown, report: partial, timer };
      } else if (!longer) {
        this._drop(); // Tab, or typed to the end by hand: the command (if any) reports it
      }
      return;
    }
    const verdicts = shown.items.map(item =>
      onRequest({ path, cellId: cell_id ?? '', prefix, text: item.text }, { path, cellId: cell_id ?? '', prefix: prefix + taken })
    );
    if (verdicts.includes('showing')) {
      if (partial) {
        this._send(partial);
      }
      return;
    }
    if (!verdicts.includes('typed_through')) {
      const onScreen = shown.items.find(item => item.text.startsWith(before)) ?? shown.items[0];
      this._send(this._reportOf(shown.fields, prefix, onScreen.text, false, false));
    }
    this._drop();
  }

  /** The cursor of cell `cellId` is now at `offset` (a single cursor; null: a selection or several). */
  moved(cellId: string, offset: number | null): void {
    const shown = this._showing;
    if (shown && (shown.cellId !== cellId || offset !== shown.offset + shown.taken.length)) {
      this._drop();
    }
  }

  /**
   * The item with `text` given for `fields` was accepted whole (its command ran): reported, less
   * the part already reported as partial accepts (or typed), at the longer prefix.
   */
  accepted(fields: CompletionFields, text: string): Promise<number> {
    const pending = this._pending;
    if (pending && sameRequest(pending.shown.fields, fields) && pending.shown.taken === text) {
      clearTimeout(pending.timer); // the edit was this accept, not a partial one
      this._pending = null;
    }
    this._flush();
    const fits = (shown: FeedbackTracker.IShown) =>
      sameRequest(shown.fields, fields) && shown.items.some(item => item.text === text);
    let shown: FeedbackTracker.IShown | null = null;
    if (this._showing && fits(this._showing)) {
      shown = this._showing;
      this._showing = null;
    } else {
      const index = this._recent.findIndex(fits);
      shown = index >= 0 ? this._recent.splice(index, 1)[0] : null;
    }
    // The edit that inserted the rest already counts in `taken`: what came before it is `previous`.
    const base = shown ? (shown.taken === text ? shown.previous : shown.taken) : '';
    const before = text.startsWith(base) && base.length < text.length ? base : '';
    return this._send(this._reportOf(fields, fields.prefix + before, text.slice(before.length), true, false));
  }

  /** An undecided insertion (see `changed`) had no accept after it: a partial accept. */
  private _flush(): void {
    const pending = this._pending;
    if (pending) {
      clearTimeout(pending.timer);
      this._pending = null;
      this._send(pending.report);
    }
  }

  /** The items are gone: kept a while for the accept command, which runs after the edit. */
  private _drop(): void {
    const shown = this._showing;
    if (!shown) {
      return;
    }
    this._showing = null;
    this._recent.unshift(shown);
    this._recent.splice(KEPT);
  }

  private _reportOf(
    fields: CompletionFields,
    prefix: string,
    suggestion: string,
    accepted: boolean,
    partial: boolean
  ): IFeedbackReport {
    const { path, cells, active, cell_id } = fields;
    return {
      path,
      prefix,
      suggestion,
      accepted,
      ...(partial ? { partial: true } : {}),
      cells: cells ?? [],
      active: active ?? -1,
      cell_id: cell_id ?? '',
      // The server's name for one accept (a dismissal has none), as JupyterLab sends it.
      key: accepted ? randomUUID() : ''
    };
  }

  private _send(report: IFeedbackReport): Promise<number> {
    return this._report(report).catch(() => 0);
  }

  private _report: (report: IFeedbackReport) => Promise<number>;
  private _settleMs: number;
  // An insertion that is both an item and the start of a longer one, until its command comes (or not).
  private _pending: { shown: FeedbackTracker.IShown; report: IFeedbackReport; timer: ReturnType<typeof setTimeout> } | null = null;
  // The items VS Code was last given, with what was typed or taken of them since.
  private _showing: FeedbackTracker.IShown | null = null;
  // Items no longer showing, newest first: the accept command of one of them may still come.
  private _recent: FeedbackTracker.IShown[] = [];
}

export namespace FeedbackTracker {
  export interface IOptions {
    /** Sends a report (ISource.feedback): resolves to the HTTP status, 0 when not sent. */
    report: (report: IFeedbackReport) => Promise<number>;
    /**
     * Milliseconds to wait for an accept command after an insertion that is both an item and the
     * start of a longer one (VS Code runs the command right after the edit).
     */
    settleMs?: number;
  }

  /** Items given for one cursor. */
  export interface IShown {
    cellId: string;
    /** Where in the cell they were given (UTF-16 offset). */
    offset: number;
    /** The request they answer (its prefix is the text before `offset`). */
    fields: CompletionFields;
    items: IItem[];
    /** The text inserted at `offset` since, by partial accepts or typing. */
    taken: string;
    /** `taken` before the last edit. */
    previous: string;
  }
}

/** The shortest insertion counted as a partial accept (one character is typing). */
const MIN_PARTIAL = 2;

/** Items no longer showing kept for their accept command. */
const KEPT = 4;

/** What VS Code inserts at once when the user types an opening bracket or quote. */
const AUTO_CLOSED = new Set(['()', '[]', '{}', '""', "''"]);

/**
 * `shown.taken` after `change`, when it lands at the end of what was taken (replacing part of it
 * is allowed: a word completed from the suggest widget); null when it lands elsewhere.
 */
function takenAfter(shown: FeedbackTracker.IShown, change: ITextChange): string | null {
  const end = shown.offset + shown.taken.length;
  if (change.offset < shown.offset || change.offset + change.removed !== end) {
    return null;
  }
  const kept = shown.taken.slice(0, change.offset - shown.offset);
  const taken = kept + change.text;
  if (change.removed === 0 && AUTO_CLOSED.has(change.text) && !shown.items.some(item => item.text.startsWith(taken))) {
    // Typing `(` inserts `()` with the cursor between: only the `(` was typed at the place.
    return kept + change.text[0];
  }
  return taken;
}

function sameRequest(a: CompletionFields, b: CompletionFields): boolean {
  return a === b || (a.path === b.path && a.cell_id === b.cell_id && a.prefix === b.prefix && a.suffix === b.suffix);
}
