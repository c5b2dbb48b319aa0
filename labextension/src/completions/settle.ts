// What the feedback tracker makes of each event while a suggestion is on screen, as pure functions
// with no JupyterLab import, so that the tests run them under node (tests/labextension/).
//
// A dismissal is exactly a suggestion typed over or escaped:
// - typed over: a new request for the same cell whose text typed since the suggestion appeared
//   diverges from the ghost text (neither a start of it nor running past its end);
// - escaped: Escape while it shows (the notebook's `notebook:enter-command-mode`), which takes
//   the cursor out of the editor and the ghost text with it.
// Nothing else is a dismissal and nothing else is reported: a request for another cell or
// notebook, a cursor moved back or text deleted (the prefix no longer continues), running the
// cell, typing the whole suggestion by hand and on (typed through), or a newer suggestion
// replacing the one on screen. Accepting (Tab) is reported, as pending until the cell runs
// (`personalize/feedback.py` on the server decides what became of it).

/** The command JupyterLab's inline completer runs to insert the ghost text. */
export const ACCEPT_COMMAND = 'inline-completer:accept';

/** The commands that show the next and the previous item of the inline completion list. */
export const NEXT_COMMAND = 'inline-completer:next';
export const PREVIOUS_COMMAND = 'inline-completer:previous';

/** Escape in a notebook's editor: the ghost text goes, turned down. */
export const ESCAPE_COMMANDS: ReadonlySet<string> = new Set([
  'notebook:enter-command-mode'
]);

/** Commands that take the ghost text away without the user turning it down: not reported. */
export const GONE_COMMANDS: ReadonlySet<string> = new Set([
  'notebook:run-cell',
  'notebook:run-cell-and-select-next',
  'notebook:run-cell-and-insert-below'
]);

/** The suggestion on screen, as these rules see it. */
export interface IShownText {
  path: string;
  cellId: string;
  /** The cell's text before the cursor when it was requested. */
  prefix: string;
  /** The ghost text (the item on screen). */
  text: string;
}

/** A new request: where, and the cell's text before the cursor. */
export interface IRequestAt {
  path: string;
  cellId: string;
  prefix: string;
}

/**
 * What a new request means for the suggestion on screen:
 * - 'showing': the user is typing through the ghost text; it stays;
 * - 'typed_over': typed text that diverges from it: a dismissal, reported;
 * - 'typed_through': typed all of it and more by hand: gone, not reported;
 * - 'elsewhere': another cell or notebook, or the prefix no longer continues: gone, not reported.
 */
export function onRequest(
  shown: IShownText,
  next: IRequestAt
): 'showing' | 'typed_over' | 'typed_through' | 'elsewhere' {
  if (next.cellId !== shown.cellId || next.path !== shown.path) {
    return 'elsewhere';
  }
  if (!next.prefix.startsWith(shown.prefix)) {
    return 'elsewhere';
  }
  const typed = next.prefix.slice(shown.prefix.length);
  if (shown.text.startsWith(typed)) {
    return 'showing';
  }
  if (typed.startsWith(shown.text)) {
    return 'typed_through';
  }
  return 'typed_over';
}

/**
 * What a command run while a suggestion shows means for it: 'accept' (reported, pending),
 * 'escape' (a dismissal, reported), 'cycle' (another item shows), 'gone' (not reported), or null
 * (the command does not concern it).
 */
export function onCommand(
  id: string
): 'accept' | 'escape' | 'cycle' | 'gone' | null {
  if (id === ACCEPT_COMMAND) {
    return 'accept';
  }
  if (id === NEXT_COMMAND || id === PREVIOUS_COMMAND) {
    return 'cycle';
  }
  if (ESCAPE_COMMANDS.has(id)) {
    return 'escape';
  }
  if (GONE_COMMANDS.has(id)) {
    return 'gone';
  }
  return null;
}
