// Partial accept: take the next word, or the rest of the line, of the suggestion on screen and
// leave the rest on screen as ghost text. JupyterLab 4.6's inline completer can only take a
// suggestion whole (jupyterlab#15531).
//
// - What is on screen: the feedback tracker's suggestion (the provider's list, JupyterLab's index
//   mirrored) less what was typed since it was offered, checked against the ghost text drawn in
//   the editor, because the mirrored index can lag JupyterLab's once typing filtered the list.
// - The part goes into the editor as a plain change at the cursor, as if typed. Then the provider
//   answers one fetch with what remains (`showAgain`) instead of asking the server again: the
//   suggestion held up as a whole, and JupyterLab on its own would drop the ghost text when the
//   cursor lands on another line, and never asks for a suggestion at the start of a line.
// - Taking all that is left is a plain accept: JupyterLab's own command, reported as usual.
// - The keys bind only while JupyterLab marks the editor host `jp-mod-inline-completer-active`, so
//   without a suggestion Ctrl+→ and Ctrl+Shift+→ move and select by word as ever. JupyterLab can
//   leave that mark behind after the ghost text is gone (it clears it only on a reset or a blur)
//   and the key is taken by then: with nothing to take, the commands do what CodeMirror would
//   have done with the key.
// - JupyterLab matches shortcuts when a keydown bubbles up to the document, after CodeMirror has
//   seen it, and CodeMirror's own Ctrl+→ / Ctrl+Shift+→ (by word) take the key first. So the two
//   commands' bindings (keys and selector as the shortcuts settings say, single keystrokes) are
//   matched here as the key goes down to the editor, in the capture phase.

import type { EditorView } from '@codemirror/view';
import type { INotebookTracker } from '@jupyterlab/notebook';
import { CommandRegistry } from '@lumino/commands';

import { IItem } from '../protocol';
import { ACCEPT_COMMAND, FeedbackTracker } from './feedback';
import { SpecgenInlineProvider } from './provider';

/** Command ids. */
export const ACCEPT_WORD_COMMAND = 'specgen:accept-next-word';
export const ACCEPT_LINE_COMMAND = 'specgen:accept-line';

// A word: letters, digits and underscores (an identifier or a number); anything else that is not
// whitespace comes in runs (`(`, `+=`, `):`).
const WORD = /^[\p{L}\p{N}_]+/u;
const PUNCTUATION = /^[^\p{L}\p{N}_\s]+/u;

/**
 * The part of `text` that "accept next word" takes, as VS Code's partial accept does: up to the
 * end of the next word (or run of punctuation), with the spaces before it. A line break, with the
 * next line's indentation, is a step of its own.
 */
export function nextWord(text: string): string {
  const spaces = /^[ \t]*/.exec(text)![0];
  const rest = text.slice(spaces.length);
  const lineBreak = /^\r?\n[ \t]*/.exec(rest);
  if (lineBreak) {
    return spaces + lineBreak[0];
  }
  const token = WORD.exec(rest) ?? PUNCTUATION.exec(rest);
  const part = spaces + (token ? token[0] : '');
  // Other whitespace (a lone \r, a form feed) is taken one character at a time.
  return part || text.slice(0, 1);
}

/**
 * The part of `text` that "accept line" takes: the rest of the current line, without its line
 * break (the cursor stays on the line, as after typing it); at the end of a line, the line break
 * and the next line.
 */
export function nextLine(text: string): string {
  const start = /^\r?\n/.exec(text)?.[0].length ?? 0;
  const end = text.indexOf('\n', start);
  if (end < 0) {
    return text;
  }
  return text.slice(0, end > 0 && text[end - 1] === '\r' ? end - 1 : end);
}

/**
 * Add the two commands. Their keys are declared in the plugin's settings schema
 * (schema/plugin.json), so that the keyboard shortcuts editor shows them and can change them.
 */
export function addPartialAcceptCommands(options: PartialAccept.IOptions): void {
  const { commands } = options;
  commands.addCommand(ACCEPT_WORD_COMMAND, {
    label: 'Accept Next Word of the Inline Suggestion',
    caption:
      'Insert the next word of the suggestion shown as ghost text; the rest stays shown',
    execute: () => acceptPart(options, 'word')
  });
  commands.addCommand(ACCEPT_LINE_COMMAND, {
    label: 'Accept Line of the Inline Suggestion',
    caption:
      'Insert the rest of the line of the suggestion shown as ghost text; the rest stays shown',
    execute: () => acceptPart(options, 'line')
  });
  document.addEventListener(
    'keydown',
    event => runOwnBinding(commands, event),
    true
  );
}

/** Run the command bound to `event`'s key, if one of ours is, before CodeMirror sees the key. */
function runOwnBinding(commands: CommandRegistry, event: KeyboardEvent): void {
  if (event.defaultPrevented || !(event.target instanceof Element)) {
    return;
  }
  const ours = [ACCEPT_WORD_COMMAND, ACCEPT_LINE_COMMAND];
  const bindings = commands.keyBindings.filter(
    b => ours.includes(b.command) && b.keys.length === 1
  );
  if (bindings.length === 0) {
    return;
  }
  const keystroke = CommandRegistry.keystrokeForKeydownEvent(event);
  const target = event.target;
  const binding = bindings.find(
    b => b.keys[0] === keystroke && target.closest(b.selector) !== null
  );
  if (!binding) {
    return;
  }
  event.preventDefault();
  event.stopPropagation();
  void commands.execute(binding.command, binding.args);
}

/**
 * A namespace for partial accept statics.
 */
export namespace PartialAccept {
  export interface IOptions {
    commands: CommandRegistry;
    /** Where the edited cell is. */
    notebooks: INotebookTracker;
    /** Knows the suggestion on screen; told what part was taken. */
    feedback: FeedbackTracker;
    /** Shows what remains. */
    provider: SpecgenInlineProvider;
  }

  export type Kind = 'word' | 'line';
}

/** The part of JupyterLab's CodeMirrorEditor used here (typed here to avoid a dependency). */
interface ICodeMirrorLike {
  host: HTMLElement;
  editor: EditorView;
}

/** The suggestion on screen, where the cursor is now. */
interface IOnScreen {
  shown: Readonly<FeedbackTracker.IShown>;
  /** The item drawn as ghost text. */
  item: IItem;
  /** What was typed since the suggestion was offered (a start of `item.text`). */
  typed: string;
  /** What of it is still ghost text. */
  rest: string;
}

function acceptPart(options: PartialAccept.IOptions, kind: PartialAccept.Kind): void {
  const { notebooks, feedback, provider, commands } = options;
  const panel = notebooks.currentWidget;
  const cell = notebooks.activeCell;
  const editor = cell?.editor as unknown as ICodeMirrorLike | null | undefined;
  if (!panel || panel.content.mode !== 'edit' || !cell || !editor?.editor) {
    return;
  }
  const view = editor.editor;
  const selection = view.state.selection;
  const cursor = selection.main.head;
  const prefix = view.state.sliceDoc(0, cursor);
  const screen =
    selection.ranges.length === 1 && selection.main.empty
      ? onScreen(feedback, cell.model.id, prefix, editor.host)
      : null;
  if (!screen) {
    moveAsCodeMirrorWould(view, kind);
    return;
  }
  const part = kind === 'word' ? nextWord(screen.rest) : nextLine(screen.rest);
  if (part.length >= screen.rest.length) {
    void commands.execute(ACCEPT_COMMAND);
    return;
  }
  view.dispatch({
    changes: { from: cursor, insert: part },
    selection: { anchor: cursor + part.length },
    scrollIntoView: true,
    userEvent: 'input.complete'
  });
  feedback.recordPartialAccept(prefix, part);

  // What remains: the item on screen first (JupyterLab shows item 0 after a reset), then the
  // others that the text taken so far continues.
  const taken = screen.typed + part;
  const items = [screen.item, ...screen.shown.items.filter(i => i !== screen.item)]
    .filter(item => item.text.startsWith(taken) && item.text.length > taken.length)
    .map(item => ({ ...item, text: item.text.slice(taken.length) }));
  const source = view.state.doc.toString();
  const at = cursor + part.length;
  provider.showAgain(
    screen.shown.id,
    { ...screen.shown.fields, prefix: source.slice(0, at), suffix: source.slice(at) },
    items
  );
}

/**
 * The suggestion drawn as ghost text in the cell `cellId`, whose text before the cursor is
 * `prefix`; null when none is drawn (or what is drawn is not ours).
 */
function onScreen(
  feedback: FeedbackTracker,
  cellId: string,
  prefix: string,
  host: HTMLElement
): IOnScreen | null {
  const shown = feedback.showing;
  const drawn = drawnFirstLine(host);
  if (!shown || drawn === null || shown.fields.cell_id !== cellId) {
    return null;
  }
  if (!prefix.startsWith(shown.fields.prefix)) {
    return null;
  }
  const typed = prefix.slice(shown.fields.prefix.length);
  const current = shown.items[shown.index];
  const candidates = [current, ...shown.items.filter(i => i !== current)];
  for (const item of candidates) {
    if (!item.text.startsWith(typed) || item.text.length === typed.length) {
      continue;
    }
    const rest = item.text.slice(typed.length);
    if (rest.split('\n')[0].trimEnd() === drawn) {
      return { shown, item, typed, rest };
    }
  }
  return null;
}

/** The first line of the ghost text drawn in `host` (trailing spaces aside), or null if none is. */
function drawnFirstLine(host: HTMLElement): string | null {
  // JupyterLab's ghost text widget; its spacers keep the height of a ghost text just removed.
  const ghost = host.querySelector<HTMLElement>(
    '.jp-GhostText:not(.jp-GhostText-lineSpacer):not(.jp-GhostText-letterSpacer)'
  );
  if (!ghost) {
    return null;
  }
  // Lines past JupyterLab's `maxLines` sit behind a "⇓" marker.
  return ghost.innerText.replace(/\u00a0/g, ' ').split(/\n|\u21d3/)[0].trimEnd();
}

/** What CodeMirror does with Ctrl+→ (cursor one word right) and Ctrl+Shift+→ (select to there). */
function moveAsCodeMirrorWould(view: EditorView, kind: PartialAccept.Kind): void {
  const range = view.state.selection.main;
  if (kind === 'word') {
    const head = range.empty ? view.moveByGroup(range, true).head : range.to;
    view.dispatch({ selection: { anchor: head }, scrollIntoView: true, userEvent: 'select' });
  } else {
    const head = view.moveByGroup(range, true).head;
    view.dispatch({
      selection: { anchor: range.anchor, head },
      scrollIntoView: true,
      userEvent: 'select'
    });
  }
}
