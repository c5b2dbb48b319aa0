// One websocket per browser tab to the server extension at `<base_url>specgen/ws`.
//
// The connection numbers requests, routes `progress`/`shown`/`chunk`/`done`/`error` to the request
// they answer and `status` and `personalize` to signals, and settles every request exactly once: by
// `done`, by `error`, by a local `cancel` or by the loss of the socket. Replies to settled requests
// are dropped, which is how the browser end ignores stale work (JupyterLab passes providers no
// abort signal).

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import {
  IComplete,
  IDone,
  IDownloadProgress,
  IErrorInfo,
  IModelDownloaded,
  IPersonalize,
  IStatus,
  MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  ServerMessage
} from './protocol';
import { CompletionRequest } from './request';

const LOG_PREFIX = '[specgen]';

/**
 * The websocket to the specgen server extension, shared by every provider call of a tab.
 */
export class SpecgenConnection implements IDisposable {
  constructor(options: SpecgenConnection.IOptions = {}) {
    this._serverSettings =
      options.serverSettings ?? ServerConnection.makeSettings();
    this._connect();
  }

  /** Emits the backend's state, and a synthetic one while the socket is down. */
  get statusChanged(): ISignal<this, IStatus> {
    return this._statusChanged;
  }

  /** Emits the user's personalize job and adapters at every step of a job and when they change. */
  get personalizeChanged(): ISignal<this, IPersonalize> {
    return this._personalizeChanged;
  }

  /** The last known state of the backend. */
  get status(): IStatus {
    return this._status;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Send a `complete` request; the returned request yields its progress, the items that held up
   * (and raw chunks when `fields.stream` is set) and exactly one final event.
   */
  complete(
    fields: Omit<IComplete, 'type' | 'id' | 'version'>
  ): CompletionRequest {
    const id = ++this._lastId;
    const request = new CompletionRequest(id);
    const message: IComplete = {
      type: 'complete',
      id,
      version: PROTOCOL_VERSION,
      ...fields
    };
    const raw = JSON.stringify(message);
    if (byteLength(raw) > MAX_MESSAGE_BYTES) {
      request.settle({
        type: 'too_large',
        message: `the notebook context is larger than ${MAX_MESSAGE_BYTES} bytes`
      });
      return request;
    }
    if (this._isDisposed) {
      request.settle(DISCONNECTED);
      return request;
    }
    this._pending.set(id, request);
    this._send(id, raw);
    return request;
  }

  /**
   * Download `model` ('' : the one the status offers) and switch to it: only on the user's click.
   * `onProgress` sees each progress frame; `done` settles once, with the final answer or the error
   * (`cancelled` after `cancelDownload(id)`, `offline` without network).
   */
  downloadModel(
    model: string,
    onProgress: (progress: IDownloadProgress) => void
  ): { id: number; done: Promise<IModelDownloaded | IErrorInfo> } {
    const id = ++this._lastId;
    const done = new Promise<IModelDownloaded | IErrorInfo>(resolve => {
      this._downloads.set(id, { onProgress, settle: resolve });
    });
    if (!this._socket || this._socket.readyState !== WebSocket.OPEN) {
      this._settleDownload(id, DISCONNECTED);
    } else {
      this._socket.send(
        JSON.stringify({
          type: 'model_download',
          id,
          model,
          version: PROTOCOL_VERSION
        })
      );
    }
    return { id, done };
  }

  /** Stop download `id`; it settles with the server's `cancelled` (what came is kept). */
  cancelDownload(id: number): void {
    if (this._downloads.has(id)) {
      this._send(
        null,
        JSON.stringify({ type: 'cancel', id, version: PROTOCOL_VERSION })
      );
    }
  }

  /**
   * Stop request `id`: it settles now as `cancelled`, and the server is told to stop working on it.
   */
  cancel(id: number): void {
    const request = this._pending.get(id);
    if (!request) {
      return; // already settled: nothing is running any more
    }
    this._pending.delete(id);
    request.settle({ type: 'cancelled', message: 'superseded' });
    if (this._outbox.delete(id)) {
      return; // never sent, so the server has nothing to stop
    }
    this._send(
      null,
      JSON.stringify({ type: 'cancel', id, version: PROTOCOL_VERSION })
    );
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    window.clearTimeout(this._retryTimer);
    this._failAll(DISCONNECTED);
    if (this._socket) {
      this._socket.onclose = null;
      this._socket.close();
      this._socket = null;
    }
    Signal.clearData(this);
  }

  private _connect(): void {
    const settings = this._serverSettings;
    let url = URLExt.join(settings.wsUrl, 'specgen', 'ws');
    // Cookies authenticate same-origin pages; the token covers the other set-ups (a page served
    // elsewhere, a token-only server), as JupyterLab does for kernel websockets.
    if (settings.token) {
      url += `?token=${encodeURIComponent(settings.token)}`;
    }
    const socket = new settings.WebSocket(url);
    this._socket = socket;
    socket.onopen = () => {
      this._retryDelay = RETRY_MIN_MS;
      for (const raw of this._outbox.values()) {
        socket.send(raw);
      }
      this._outbox.clear();
    };
    socket.onmessage = event => this._onMessage(event.data);
    socket.onclose = event => {
      this._socket = null;
      this._failAll({
        type: 'backend_unavailable',
        message: 'lost the connection to the Jupyter server'
      });
      if (this._isDisposed) {
        return;
      }
      const delay = this._retryDelay;
      this._retryDelay = Math.min(this._retryDelay * 2, RETRY_MAX_MS);
      const why = event.reason ? `: ${event.reason}` : '';
      this._setStatus({
        state: 'error',
        message:
          `no connection to the Jupyter server (code ${event.code}${why}); ` +
          `retrying in ${Math.round(delay / 1000)} s`
      });
      this._retryTimer = window.setTimeout(() => this._connect(), delay);
    };
  }

  /** Send now when open, else hold `complete` messages (keyed by id) until the socket opens. */
  private _send(id: number | null, raw: string): void {
    const socket = this._socket;
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(raw);
    } else if (id !== null) {
      this._outbox.set(id, raw);
    }
  }

  private _onMessage(data: unknown): void {
    let message: ServerMessage;
    try {
      message = JSON.parse(String(data)) as ServerMessage;
    } catch (reason) {
      console.warn(LOG_PREFIX, 'dropped a frame that is not JSON', reason);
      return;
    }
    if (message.version !== PROTOCOL_VERSION) {
      this._setStatus({
        state: 'error',
        message:
          `protocol version ${message.version} from the server, ${PROTOCOL_VERSION} in the ` +
          'browser: reinstall jupyter-specgen and reload the page'
      });
      return;
    }
    switch (message.type) {
      case 'status':
        this._status = message;
        this._statusChanged.emit(message);
        return;
      case 'personalize':
        this._personalizeChanged.emit(message);
        return;
      case 'progress':
        this._pending.get(message.reply_to)?.addProgress(message);
        return;
      case 'shown':
        this._pending.get(message.reply_to)?.addShown(message);
        return;
      case 'chunk':
        this._pending.get(message.reply_to)?.addChunk(message);
        return;
      case 'done':
        this._finish(message.reply_to, message);
        return;
      case 'download_progress':
        this._downloads.get(Number(message.reply_to))?.onProgress(message);
        return;
      case 'model_downloaded':
        this._settleDownload(Number(message.reply_to), message);
        return;
      case 'error':
        if (
          typeof message.reply_to === 'number' &&
          this._downloads.has(message.reply_to)
        ) {
          this._settleDownload(message.reply_to, message.error);
        } else if (typeof message.reply_to === 'number') {
          this._finish(message.reply_to, message.error);
        } else {
          console.warn(LOG_PREFIX, 'server error:', message.error.message);
        }
        return;
      default:
        console.warn(LOG_PREFIX, 'dropped a message of unknown type', message);
    }
  }

  private _finish(id: number, result: IDone | IErrorInfo): void {
    const request = this._pending.get(id);
    if (request) {
      this._pending.delete(id);
      request.settle(result);
    }
  }

  private _settleDownload(
    id: number,
    result: IModelDownloaded | IErrorInfo
  ): void {
    const download = this._downloads.get(id);
    if (download) {
      this._downloads.delete(id);
      download.settle(result);
    }
  }

  private _failAll(error: IErrorInfo): void {
    for (const id of [...this._downloads.keys()]) {
      this._settleDownload(id, error);
    }
    const pending = [...this._pending.values()];
    this._pending.clear();
    this._outbox.clear();
    for (const request of pending) {
      request.settle(error);
    }
  }

  private _setStatus(fields: Pick<IStatus, 'state' | 'message'>): void {
    this._status = {
      type: 'status',
      reply_to: null,
      model: '',
      device: '',
      version: PROTOCOL_VERSION,
      reason: '',
      offer: null,
      ...fields
    };
    this._statusChanged.emit(this._status);
  }

  private _serverSettings: ServerConnection.ISettings;
  private _socket: WebSocket | null = null;
  private _lastId = 0;
  // Requests not yet settled, by id; a reply whose id is not here is stale and dropped.
  private _pending = new Map<number, CompletionRequest>();
  // Model downloads in flight, by id (one per click; the server allows one at a time).
  private _downloads = new Map<
    number,
    {
      onProgress: (progress: IDownloadProgress) => void;
      settle: (result: IModelDownloaded | IErrorInfo) => void;
    }
  >();
  // `complete` messages made while the socket was down, sent on open (ordered by id).
  private _outbox = new Map<number, string>();
  private _retryDelay = RETRY_MIN_MS;
  private _retryTimer = 0;
  private _status: IStatus = {
    type: 'status',
    reply_to: null,
    state: 'starting',
    model: '',
    device: '',
    message: 'connecting to the Jupyter server',
    version: PROTOCOL_VERSION,
    reason: '',
    offer: null
  };
  private _statusChanged = new Signal<this, IStatus>(this);
  private _personalizeChanged = new Signal<this, IPersonalize>(this);
  private _isDisposed = false;
}

/**
 * A namespace for SpecgenConnection statics.
 */
export namespace SpecgenConnection {
  export interface IOptions {
    /** Defaults to `ServerConnection.makeSettings()` (the page's base URL and token). */
    serverSettings?: ServerConnection.ISettings;
  }
}

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;

const DISCONNECTED: IErrorInfo = {
  type: 'backend_unavailable',
  message: 'the connection to the Jupyter server is closed'
};

function byteLength(text: string): number {
  return new TextEncoder().encode(text).length;
}
