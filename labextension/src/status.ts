// The status bar item: the backend's state (starting / ready with the model / error with the
// reason) and the validation verdict of the latest suggestion, with details in the tooltip.

import { Widget } from '@lumino/widgets';

import { IItem, IStatus } from './protocol';

/**
 * A status bar item showing the specgen backend and the latest verdict.
 */
export class SpecgenStatus extends Widget {
  constructor(options: SpecgenStatus.IOptions = {}) {
    super();
    this._hint = options.hint ?? '';
    this.addClass('jp-specgen-status');
    if (this._hint) {
      this.addClass('jp-mod-clickable');
    }
    this._render();
  }

  /** Show the backend's state. */
  setStatus(status: IStatus): void {
    this._status = status;
    this._render();
  }

  /** A new request started: the previous verdict no longer describes what is shown. */
  clearVerdict(): void {
    this._verdict = null;
    this._render();
  }

  /** Show the verdict of the suggestion now displayed (null item: none came). */
  setVerdict(item: IItem | null, error?: string): void {
    this._verdict = error ? { error } : item ? { item } : null;
    this._render();
  }

  private _render(): void {
    const status = this._status;
    let text: string;
    let title: string;
    switch (status?.state) {
      case 'ready': {
        text = `specgen: ${status.model || 'ready'}`;
        title = `Specgen is ready: ${status.model}${status.device ? ` on ${status.device}` : ''}`;
        break;
      }
      case 'error':
        text = 'specgen: error';
        title = `Specgen error: ${status.message}`;
        break;
      default:
        text = 'specgen: starting…';
        title = `Specgen is starting${status?.message ? `: ${status.message}` : ''}`;
    }
    const verdict = this._verdict;
    let state: string = status?.state ?? 'starting';
    if (verdict && status?.state === 'ready') {
      if ('error' in verdict) {
        text += ' · no suggestion';
        title += `\nLast request failed: ${verdict.error}`;
      } else {
        const { verdict: kind, detail } = verdict.item;
        text += ` · ${VERDICT_LABELS[kind]}`;
        title += `\nSuggestion ${VERDICT_TITLES[kind]}${detail ? `: ${detail}` : ''}`;
        state = kind;
      }
    }
    this.node.textContent = text;
    this.node.title = this._hint ? `${title}\n${this._hint}` : title;
    this.node.dataset.state = state;
  }

  private _hint: string;
  private _status: IStatus | null = null;
  private _verdict: { item: IItem } | { error: string } | null = null;
}

/**
 * A namespace for SpecgenStatus statics.
 */
export namespace SpecgenStatus {
  export interface IOptions {
    /** A last tooltip line saying what a click does; the click itself is wired by the plugin. */
    hint?: string;
  }
}

const VERDICT_LABELS: Record<IItem['verdict'], string> = {
  ran: '✓ ran',
  raised: '✗ raised',
  not_validated: '? not validated'
};

const VERDICT_TITLES: Record<IItem['verdict'], string> = {
  ran: 'ran cleanly in a fork of the kernel',
  raised: 'raised in a fork of the kernel',
  not_validated: 'was not validated'
};
