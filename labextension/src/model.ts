// The model in use, and the offer of a better one, shared by the status bar item and the
// personalize panel. While the embedded model serves and the backend names a better one (the
// status's `offer`), both show "Download Qwen2.5-Coder-0.5B (≈1 GB) for better suggestions":
// nothing is fetched without that click; then a progress bar with bytes, rate and time left, and
// a Cancel; the model's name changes when the backend serves it. Offline, the backend's answer (no
// network, and how to copy a model folder in by hand) is shown next to the offer. There is one
// download per tab: a click in either place starts it, and both show its progress.

import { ISignal, Signal } from '@lumino/signaling';

import {
  IDownloadProgress,
  IErrorInfo,
  IModelDownloaded,
  IStatus
} from './protocol';

/**
 * The backend's model and the download of the one it offers.
 */
export class ModelOffer {
  constructor(downloads: ModelOffer.IDownloads | null) {
    this._downloads = downloads;
  }

  /** Emitted when the status, the download or its outcome changes. */
  get changed(): ISignal<ModelOffer, void> {
    return this._changed;
  }

  /** The backend's latest status (model, device, why this model, what it offers). */
  get status(): IStatus | null {
    return this._status;
  }

  /** The model offered now: only while the backend is ready and downloads can be asked for. */
  get offered(): IStatus['offer'] {
    return this._status?.state === 'ready' && this._downloads
      ? this._status.offer
      : null;
  }

  setStatus(status: IStatus): void {
    this._status = status;
    this._changed.emit();
  }

  /** Start downloading the offered model (what the offer's button does). */
  download(): void {
    const offer = this.offered;
    if (!this._downloads || !offer || this._download) {
      return;
    }
    this._error = '';
    const started = this._downloads.downloadModel(offer.model, progress => {
      if (this._download) {
        this._download.progress = progress;
        this._changed.emit();
      }
    });
    this._download = { id: started.id, model: offer.model, progress: null };
    this._changed.emit();
    void started.done.then(result => {
      this._download = null;
      if (result.type !== 'model_downloaded') {
        const error = result as IErrorInfo;
        this._error =
          error.type === 'cancelled'
            ? 'Download cancelled; what came is kept, and the next download goes on from there.'
            : error.message;
      } else if (!(result as IModelDownloaded).switched) {
        this._error = `${result.model} is downloaded; it serves after a restart.`;
      }
      this._changed.emit();
    });
  }

  /** Stop the download in flight (what came is kept). */
  cancel(): void {
    if (this._download && this._downloads) {
      this._downloads.cancelDownload(this._download.id);
    }
  }

  /**
   * The offer, the download in flight, or why the last one did not end well, into `node`
   * (emptied first); `node.dataset.state` says which ('offered', 'downloading' or ''). With
   * `maxChars` an error is shown to its first line, cut there (its whole is the tooltip);
   * without, whole (the offline answer says how to copy a model folder in by hand).
   */
  render(
    node: HTMLElement,
    options: { separator?: string; maxChars?: number } = {}
  ): void {
    const separator = options.separator ?? '';
    const maxChars = options.maxChars ?? Infinity;
    const offer = this.offered;
    const download = this._download;
    node.replaceChildren();
    node.dataset.state = download ? 'downloading' : offer ? 'offered' : '';
    if (download) {
      const p = download.progress;
      const bar = document.createElement('progress');
      bar.className = 'jp-specgen-download-progress';
      bar.style.width = '6em';
      bar.style.margin = '0 4px';
      if (p && p.total_bytes > 0) {
        bar.max = p.total_bytes;
        bar.value = p.done_bytes;
      }
      const text = document.createElement('span');
      text.className = 'jp-specgen-download-text';
      text.textContent = downloadText(download.model, p);
      const cancel = document.createElement('button');
      cancel.className = 'jp-specgen-download-cancel';
      cancel.textContent = 'Cancel';
      cancel.onclick = () => this.cancel();
      node.append(separator, bar, text, ' ', cancel);
      return;
    }
    if (!offer) {
      return;
    }
    const button = document.createElement('button');
    button.className = 'jp-specgen-download-offer';
    button.textContent = `Download ${shortName(offer.model)} (≈${gigabytes(offer.bytes)}) for better suggestions`;
    button.onclick = () => this.download();
    node.append(separator, button);
    if (this._error) {
      const error = document.createElement('span');
      error.className = 'jp-specgen-download-error';
      if (Number.isFinite(maxChars)) {
        const line = this._error.split('\n')[0];
        error.textContent = ` ${line.length > maxChars ? `${line.slice(0, maxChars - 1)}…` : line}`;
      } else {
        error.textContent = ` ${this._error}`;
        error.style.whiteSpace = 'pre-line';
      }
      error.title = this._error;
      node.append(error);
    }
  }

  private _downloads: ModelOffer.IDownloads | null;
  private _status: IStatus | null = null;
  private _download: {
    id: number;
    model: string;
    progress: IDownloadProgress | null;
  } | null = null;
  private _error = '';
  private _changed = new Signal<ModelOffer, void>(this);
}

/**
 * A namespace for ModelOffer statics.
 */
export namespace ModelOffer {
  /** What the offer needs of the connection. */
  export interface IDownloads {
    downloadModel(
      model: string,
      onProgress: (progress: IDownloadProgress) => void
    ): { id: number; done: Promise<IModelDownloaded | IErrorInfo> };
    cancelDownload(id: number): void;
  }
}

/** "Qwen2.5-Coder-0.5B" of "Qwen/Qwen2.5-Coder-0.5B". */
function shortName(model: string): string {
  return model.split('/').pop() || model;
}

function gigabytes(bytes: number): string {
  const gb = bytes / 1e9;
  return gb >= 10 ? `${Math.round(gb)} GB` : `${Math.round(gb * 10) / 10} GB`;
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(bytes >= 1e8 ? 0 : 1)} MB`;
}

/** "downloading Qwen2.5-Coder-0.5B: 34% · 336 of 988 MB · 2.1 MB/s · 5 min left". */
function downloadText(model: string, p: IDownloadProgress | null): string {
  const name = shortName(model);
  if (!p) {
    return `downloading ${name}…`;
  }
  if (p.phase === 'load') {
    return `loading ${name}…`;
  }
  const parts = [
    p.total_bytes > 0
      ? `${Math.floor((100 * p.done_bytes) / p.total_bytes)}%`
      : '',
    `${megabytes(p.done_bytes)} of ${megabytes(p.total_bytes)}`,
    p.rate > 0 ? `${megabytes(p.rate)}/s` : '',
    p.eta_s === null
      ? ''
      : p.eta_s < 60
        ? `${Math.ceil(p.eta_s)} s left`
        : `${Math.ceil(p.eta_s / 60)} min left`
  ];
  return `downloading ${name}: ${parts.filter(Boolean).join(' · ')}`;
}
