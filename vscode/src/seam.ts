// The seam between VS Code and the rest of the extension: the few things the provider reads from
// an editor and writes to the status bar, as plain data. extension.ts fills them from the VS Code
// API; the tests fill them by hand and run the provider against a real server, without VS Code.

import type { ICell } from '../../labextension/src/protocol';

/** The cell (or file) being edited, the cursor in it, and the notebook around it. */
export interface IDocumentSnapshot {
  /** The notebook's or file's path, relative to the workspace (which is the Jupyter server's root). */
  path: string;
  /** Names the cell (or file) across keystrokes: a newer request of it makes older ones stale. */
  cellId: string;
  /** The document's version (VS Code's `TextDocument.version`): with cellId and offset, names a cursor. */
  version: number;
  /** The whole text of the cell (or file). */
  text: string;
  /** Where the cursor is in `text` (UTF-16 offset, as VS Code's `offsetAt` gives it). */
  offset: number;
  /** The notebook's cells in order, and the index of the edited one; null for a plain file. */
  notebook: { cells: ICell[]; active: number } | null;
}

/** One cursor in one version of a cell (or file): where items were given. */
export interface ICursor {
  cellId: string;
  version: number;
  offset: number;
}

/**
 * Asks the editor to query the provider again at `at`, because more validated items came for it
 * after the first ones were shown (extension.ts: `editor.action.inlineSuggest.trigger`, when the
 * cursor is still there).
 */
export type IRequery = (at: ICursor) => void;

/** What the status bar item shows. */
export interface IStatusView {
  /** The item's text (VS Code's `$(icon)` syntax is allowed). */
  text: string;
  /** Every detail, one per line. */
  tooltip: string;
  /**
   * starting / ready / error (the server or backend), working (a request in flight), or the
   * verdict of the suggestion shown (ran, incomplete, defined, not_validated), none (no
   * suggestion, with the reason).
   */
  state: string;
}

/** Where the status goes (a VS Code StatusBarItem in the extension, an array in the tests). */
export interface IStatusSink {
  show(view: IStatusView): void;
}

/** VS Code's CancellationToken, as far as it is read here. */
export interface ICancelSignal {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: () => void): { dispose(): void };
}
