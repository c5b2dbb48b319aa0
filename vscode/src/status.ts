// What the status bar item says, as the JupyterLab one does (labextension/src/status.ts): the
// server's state (starting / ready with the model / error with the reason); while a request
// runs, where it is; once items are on screen (the first validated one can be, while the others
// are still validated), the verdict of the one VS Code shows first, with the count VS Code has
// and, while the request goes on, where it is; or why there is none. VS Code's stable API does
// not say which item is on screen after the user cycles, so the verdict is the first item's; the
// tooltip lists every item's.

import type { IItem, IProgress } from '../../labextension/src/protocol';
import type { IStatusSink, IStatusView } from './seam';
import type { IAnswer, ISourceStatus } from './source';

export class StatusModel {
  constructor(sink: IStatusSink, options: { mode: 'jupyter' | 'backend'; hint?: string }) {
    this._sink = sink;
    this._mode = options.mode;
    this._hint = options.hint ?? '';
  }

  /** The last view shown. */
  get view(): IStatusView {
    return this._view;
  }

  setSource(status: ISourceStatus): void {
    this._source = status;
    this._render();
  }

  started(): void {
    this._progress = { stage: 'specs', done: 0, total: 0, message: '' };
    this._answer = null;
    this._render();
  }

  progressed(progress: Pick<IProgress, 'stage' | 'done' | 'total' | 'message'>): void {
    this._progress = progress;
    this._render();
  }

  /**
   * VS Code now has `answer.items` (before the end: the validated ones so far); `running`: the
   * request goes on, and its progress is shown next to them.
   */
  showing(answer: IAnswer, running: boolean): void {
    if (!running) {
      this._progress = null;
    }
    this._answer = answer;
    this._render();
  }

  finished(answer: IAnswer): void {
    if (answer.cancelled) {
      return; // a newer request took over: what it says is what matters
    }
    this._progress = null;
    this._answer = answer;
    this._render();
  }

  private _render(): void {
    const source = this._source;
    const lines: string[] = [];
    let text: string;
    let state: string;
    const where = this._mode === 'jupyter' ? 'Jupyter server' : 'standalone specgen-backend';
    switch (source.state) {
      case 'ready':
        text = `$(check) specgen: ${source.model || 'ready'}`;
        state = 'ready';
        lines.push(`Specgen is ready (${where}): ${source.model}${source.device ? ` on ${source.device}` : ''}`);
        break;
      case 'error':
        text = `$(error) specgen: ${shorten(source.message || 'error')}`;
        state = 'error';
        lines.push(`Specgen error (${where}): ${source.message}`);
        break;
      default:
        text = '$(sync~spin) specgen: starting…';
        state = 'starting';
        lines.push(`Specgen is starting (${where})${source.message ? `: ${source.message}` : ''}`);
    }
    const activity = this._activity(lines);
    if (activity && (source.state === 'ready' || activity.state !== 'working')) {
      text = `specgen: ${activity.text}`;
      state = activity.state;
    }
    if (this._hint) {
      lines.push(this._hint);
    }
    this._view = { text, tooltip: [...new Set(lines)].join('\n'), state };
    this._sink.show(this._view);
  }

  private _activity(lines: string[]): { text: string; state: string } | null {
    const progress = this._progress;
    const said = progress ? PROGRESS_LABELS[progress.stage](progress) : '';
    const answer = this._answer;
    const best = answer?.items[0];
    if (answer && best) {
      answer.items.forEach((item, index) => {
        lines.push(`${index + 1}/${answer.items.length}: ${VERDICT_TITLES[item.verdict]}${item.detail ? ` (${item.detail})` : ''}`);
      });
      if (progress) {
        lines.push(`Still working (${said}): suggestions that hold up later join these (Alt+] cycles them)`);
      } else if (answer.error) {
        lines.push(`The rest of the request failed: ${answer.error}`);
      }
      const count = answer.items.length > 1 ? ` (${answer.items.length})` : '';
      const more = progress ? ` · $(sync~spin) ${said}` : '';
      return { text: `${verdictLabel(best)}${count}${more}`, state: best.verdict };
    }
    if (progress) {
      lines.push(`Working on a suggestion: ${said}`);
      return { text: `$(sync~spin) ${said}`, state: 'working' };
    }
    if (!answer) {
      return null;
    }
    if (answer.error) {
      lines.push(`No suggestion: the request failed: ${answer.error}`);
      return { text: `no suggestion: ${shorten(answer.error)}`, state: 'none' };
    }
    const summary = answer.summary.trim() || 'no suggestion';
    const none = /^no suggestion/i.test(summary) ? summary : `no suggestion: ${summary}`;
    lines.push(none);
    return { text: shorten(none), state: 'none' };
  }

  private _sink: IStatusSink;
  private _mode: 'jupyter' | 'backend';
  private _hint: string;
  private _source: ISourceStatus = { state: 'starting', model: '', device: '', message: '' };
  private _progress: Pick<IProgress, 'stage' | 'done' | 'total' | 'message'> | null = null;
  private _answer: IAnswer | null = null;
  private _view: IStatusView = { text: '', tooltip: '', state: 'starting' };
}

const MAX_TEXT = 80;

const PROGRESS_LABELS: Record<IProgress['stage'], (p: Pick<IProgress, 'done' | 'total'>) => string> = {
  specs: () => 'reading the kernel…',
  generating: () => 'generating…',
  validating: ({ done, total }) => (total > 0 ? `validating ${done}/${total}` : 'validating…')
};

const VERDICT_TITLES: Record<IItem['verdict'], string> = {
  ran: 'ran cleanly in a sandboxed fork of the kernel',
  incomplete: 'is an unfinished statement; the part written so far ran in a fork of the kernel',
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
      const reason = item.detail.replace(/^not validated:?\s*/i, '').split(' (')[0];
      return shorten(reason ? `? not validated: ${reason}` : '? not validated');
    }
  }
}

function shorten(text: string): string {
  const line = text.split('\n')[0];
  return line.length > MAX_TEXT ? `${line.slice(0, MAX_TEXT - 1)}…` : line;
}
