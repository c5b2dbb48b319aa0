// The status bar item: the backend's state (starting / ready with the model / error with the
// reason); while a request runs, where it is ("specgen: generating…", "specgen: validating 2/3");
// then the verdict of the suggestion ON SCREEN (cycling changes it; nothing on screen, no
// verdict), or, when nothing held up, why in words ("specgen: no suggestion: 3 candidates raised
// NameError: …"). When suggestions come unvalidated because the system has no sandbox, that is
// said once (`IOptions.notify`) and stays marked on the item, instead of on every keystroke.
// Details go to the tooltip. While the embedded model serves and the backend names a better one,
// the item shows the offer of it (`ModelOffer`, shared with the personalize panel).

import { Widget } from '@lumino/widgets';

import { ModelOffer } from './model';
import { IItem, IProgress, IStatus } from './protocol';

/**
 * A status bar item showing the specgen backend, the request in flight and the verdict on screen.
 */
export class SpecgenStatus extends Widget {
  constructor(options: SpecgenStatus.IOptions = {}) {
    super();
    this._hint = options.hint ?? '';
    this._notify = options.notify ?? null;
    this._offer = options.offer ?? null;
    this._offer?.changed.connect(this._render, this);
    this.addClass('jp-specgen-status');
    if (this._hint) {
      this.addClass('jp-mod-clickable');
    }
    this._label = document.createElement('span');
    this._offerNode = document.createElement('span');
    this._offerNode.className = 'jp-specgen-download';
    // The offer's clicks are its own, not the item's (which opens the panel).
    this._offerNode.addEventListener('click', event => event.stopPropagation());
    this.node.append(this._label, this._offerNode);
    this._render();
  }

  /** The reason suggestions are not validated on this system, once one said so; else ''. */
  get noSandbox(): string {
    return this._noSandbox;
  }

  /** Show the backend's state. */
  setStatus(status: IStatus): void {
    this._status = status;
    this._render();
  }

  /** A new request started: what was said about the previous one no longer applies. */
  started(): void {
    this._progress = { stage: 'specs', done: 0, total: 0, message: '' };
    this._outcome = null;
    this._render();
  }

  /** Where the request in flight is. */
  setProgress(progress: Pick<IProgress, 'stage' | 'done' | 'total' | 'message'>): void {
    this._progress = progress;
    this._render();
  }

  /**
   * The request ended: nothing more is in flight. With no items, `summary` (or `error`) says why
   * nothing is shown.
   */
  finished(outcome: SpecgenStatus.IOutcome): void {
    this._progress = null;
    this._outcome = outcome;
    for (const item of outcome.items) {
      this._check(item);
    }
    this._render();
  }

  /** The item now on screen (null: none is), whose verdict the item shows. */
  setShowing(item: IItem | null): void {
    this._showing = item;
    if (item) {
      this._check(item);
    }
    this._render();
  }

  /** Start downloading the offered model (what the offer's button does). */
  download(): void {
    this._offer?.download();
  }

  /** Stop the download in flight (what came is kept). */
  cancelDownload(): void {
    this._offer?.cancel();
  }

  /** Note an item that says the system has no sandbox: said once, then marked on the item. */
  private _check(item: IItem): void {
    if (this._noSandbox || item.verdict !== 'not_validated') {
      return;
    }
    if (!NO_SANDBOX.test(item.detail)) {
      return;
    }
    this._noSandbox = tidy(item.detail);
    this._notify?.(
      'Specgen: suggestions are not validated: no sandbox on this system, so candidates are ' +
        `shown without being run first. ${this._noSandbox}`
    );
  }

  private _render(): void {
    const status = this._status;
    const lines: string[] = [];
    let text: string;
    let state: string;
    switch (status?.state) {
      case 'ready':
        text = `specgen: ${status.model || 'ready'}`;
        state = 'ready';
        lines.push(
          `Specgen is ready: ${status.model}${status.device ? ` on ${status.device}` : ''}`
        );
        if (status.reason) {
          lines.push(`Why this model: ${status.reason}`);
        }
        break;
      case 'error':
        text = 'specgen: error';
        state = 'error';
        lines.push(`Specgen error: ${status.message}`);
        break;
      default:
        text = 'specgen: starting…';
        state = 'starting';
        lines.push(
          `Specgen is starting${status?.message ? `: ${status.message}` : ''}`
        );
    }
    if (status?.state === 'ready') {
      const activity = this._activity(lines);
      if (activity) {
        text = `specgen: ${activity.text}`;
        state = activity.state;
      }
    }
    if (this._noSandbox) {
      text += ' · ⚠ no sandbox';
      lines.push(
        `Suggestions are not validated: no sandbox on this system (${this._noSandbox})`
      );
    }
    if (this._hint) {
      lines.push(this._hint);
    }
    this._label.textContent = text;
    if (this._offer) {
      this._offer.render(this._offerNode, { separator: ' · ', maxChars: MAX_TEXT });
    }
    this.node.title = [...new Set(lines)].join('\n');
    this.node.dataset.state = state;
    this.node.dataset.sandbox = this._noSandbox ? 'missing' : '';
  }

  /** What the item says about the request: in flight, on screen, or why nothing is. */
  private _activity(lines: string[]): { text: string; state: string } | null {
    const progress = this._progress;
    const showing = this._showing;
    let progressText = '';
    if (progress) {
      progressText = PROGRESS_LABELS[progress.stage](progress);
      lines.push(
        `Working on a suggestion: ${progressText}${progress.message ? ` (${progress.message})` : ''}`
      );
    }
    if (showing) {
      const detail = tidy(showing.detail);
      lines.push(
        `The suggestion shown ${VERDICT_TITLES[showing.verdict]}${detail ? `: ${detail}` : ''}`
      );
      const label = verdictLabel(showing);
      return {
        text: progressText ? `${label} · ${progressText}` : label,
        state: showing.verdict
      };
    }
    if (progress) {
      return { text: progressText, state: 'working' };
    }
    const outcome = this._outcome;
    if (!outcome || outcome.items.length > 0) {
      return null; // the items were shown and the user has since taken or left them
    }
    if (outcome.error) {
      lines.push(`No suggestion: the request failed: ${outcome.error}`);
      return { text: `no suggestion: ${shorten(outcome.error)}`, state: 'none' };
    }
    const summary = tidy(outcome.summary) || 'no suggestion';
    const said = /^no suggestion/i.test(summary) ? summary : `no suggestion: ${summary}`;
    lines.push(said);
    return { text: shorten(said), state: 'none' };
  }

  private _hint: string;
  private _notify: ((message: string) => void) | null;
  private _offer: ModelOffer | null;
  private _label: HTMLSpanElement;
  private _offerNode: HTMLSpanElement;
  private _status: IStatus | null = null;
  private _progress: Pick<IProgress, 'stage' | 'done' | 'total' | 'message'> | null =
    null;
  private _showing: IItem | null = null;
  private _outcome: SpecgenStatus.IOutcome | null = null;
  private _noSandbox = '';
}

/**
 * A namespace for SpecgenStatus statics.
 */
export namespace SpecgenStatus {
  export interface IOptions {
    /** A last tooltip line saying what a click does; the click itself is wired by the plugin. */
    hint?: string;
    /** Tells the user something once (a notification), e.g. that there is no sandbox. */
    notify?: (message: string) => void;
    /** The model offer (shared with the panel); without it nothing is offered. */
    offer?: ModelOffer;
  }

  /** How a request ended. */
  export interface IOutcome {
    /** Every item that held up, best first. */
    items: IItem[];
    /** Why nothing is shown (the server's `done.summary`), when `items` is empty. */
    summary: string;
    /** The request failed (not a cancel): the message. */
    error?: string;
  }
}

/** The detail of a not-validated item that says the OS fence cannot be built here. */
const NO_SANDBOX = /no sandbox/i;

/** Longest text on the status bar itself; the tooltip has the whole. */
const MAX_TEXT = 80;

const PROGRESS_LABELS: Record<
  IProgress['stage'],
  (progress: Pick<IProgress, 'done' | 'total'>) => string
> = {
  specs: () => 'reading the kernel…',
  generating: () => 'generating…',
  // `done` of `total` candidates have a verdict (they are validated side by side).
  validating: ({ done, total }) =>
    total > 0 ? `validating ${done}/${total}` : 'validating…'
};

const VERDICT_TITLES: Record<IItem['verdict'], string> = {
  ran: 'ran cleanly in a sandboxed fork of the kernel',
  incomplete:
    'is an unfinished statement; the part written so far ran in a fork of the kernel',
  defined: 'defines a function that nothing in the notebook calls, so its body was not run',
  not_validated: 'was not run before being shown'
};

function verdictLabel(item: IItem): string {
  switch (item.verdict) {
    case 'ran':
      return '✓ ran';
    case 'incomplete':
      return '◐ incomplete';
    case 'defined':
      return 'defined, not exercised';
    case 'not_validated': {
      // The reason without its parenthesised why ("no sandbox on this system (libseccomp not
      // usable …)"): the bar has room for the what, the tooltip has the whole.
      const reason = tidy(item.detail)
        .replace(/^not validated:?\s*/i, '')
        .split(' (')[0];
      return shorten(reason ? `? not validated: ${reason}` : '? not validated');
    }
  }
}

/**
 * `detail` with a parenthesised part that repeats the one before it said once (a message that
 * already ends in "(line 1)" and had it appended again read "(line 1) (line 1)").
 */
export function tidy(detail: string): string {
  return detail.replace(/(\([^()]*\))(?:\s*\1)+/g, '$1').trim();
}

function shorten(text: string): string {
  const line = text.split('\n')[0];
  return line.length > MAX_TEXT ? `${line.slice(0, MAX_TEXT - 1)}…` : line;
}
