// What the provider asks of a connection, whichever mode it is in: the server's state, and one
// answer per request (the items in rank order, or why there are none). Also the reconnecting
// websocket both modes use.

import WebSocket from 'ws';

import type { IFeedbackReport, IItem, IProgress } from '../../labextension/src/protocol';
import type { CompletionFields } from './context';
import type { ICancelSignal } from './seam';

/** The state of the Jupyter server's backend, or of the standalone backend. */
export interface ISourceStatus {
  state: 'starting' | 'ready' | 'error';
  model: string;
  device: string;
  /** For `error`: what went wrong and how to fix it; else what is happening. */
  message: string;
}

/** The one final answer of a request. */
export interface IAnswer {
  /** Every item that held up (Jupyter mode) or every distinct candidate (standalone), best first. */
  items: IItem[];
  /** Why nothing is shown, in words (the server's `done.summary`). */
  summary: string;
  /** Candidates that did not hold up. */
  rejected: number;
  model: string;
  /** The request failed: why (not set for a cancel). */
  error?: string;
  /** Cancelled (a newer keystroke, VS Code's token): nothing to show, nothing to say. */
  cancelled?: boolean;
}

export interface IRequestOptions {
  /** Milliseconds without any frame of the request after which it is abandoned. */
  timeoutMs: number;
  cancel?: ICancelSignal;
  onProgress?: (progress: Pick<IProgress, 'stage' | 'done' | 'total' | 'message'>) => void;
  /**
   * An item held up (Jupyter mode: the server's `shown` frame, validated in the kernel's fork),
   * before the final answer ranks them all: the provider can show it at once.
   */
  onShown?: (item: IItem) => void;
}

export interface ISource {
  readonly mode: 'jupyter' | 'backend';
  readonly status: ISourceStatus;
  /** Called with every change of `status`. */
  onStatus(listener: (status: ISourceStatus) => void): void;
  /** The kernel on this server of the notebook at `path`, if any (Jupyter mode only). */
  kernelFor(path: string): Promise<string | null>;
  complete(fields: CompletionFields, options: IRequestOptions): Promise<IAnswer>;
  /**
   * Report what the user did with a suggestion (Jupyter mode: `POST specgen/feedback`, the
   * feedback store); resolves to the HTTP status (0: not sent, or no store in this mode); never
   * throws: a lost report costs one training example, not the edit.
   */
  feedback(report: IFeedbackReport): Promise<number>;
  dispose(): void;
}

/**
 * A websocket that reconnects with backoff and says, in words, why it is down. Frames sent while
 * it is down are not queued: the caller answers its requests from `failure`.
 */
export class Socket {
  constructor(options: Socket.IOptions) {
    this._options = options;
    this._connect();
  }

  get isOpen(): boolean {
    return this._ws !== null && this._ws.readyState === WebSocket.OPEN;
  }

  /** Why the socket is down ('' while it is up or still making its first attempt). */
  get failure(): string {
    return this._failure;
  }

  /** Resolves once the socket is open or an attempt to open it failed (then `failure` says why). */
  settled(): Promise<void> {
    if (this.isOpen || this._failure) {
      return Promise.resolve();
    }
    return new Promise(resolve => this._waiters.push(resolve));
  }

  send(raw: string): boolean {
    if (!this.isOpen) {
      return false;
    }
    this._ws!.send(raw);
    return true;
  }

  /** Drop the socket and connect again now (the settings changed, or the user asked). */
  reconnect(): void {
    clearTimeout(this._timer);
    this._retryMs = RETRY_MIN_MS;
    this._drop();
    this._connect();
  }

  dispose(): void {
    this._disposed = true;
    clearTimeout(this._timer);
    this._drop();
  }

  private _connect(): void {
    const { url, headers, describe } = this._options;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, { headers, handshakeTimeout: 10_000, maxPayload: 4 << 20 });
    } catch (reason) {
      this._down(`${describe}: ${String((reason as Error).message ?? reason)}`);
      return;
    }
    this._ws = ws;
    let why = '';
    ws.on('unexpected-response', (_request, response) => {
      const code = response.statusCode ?? 0;
      why =
        code === 401 || code === 403
          ? `${describe} refused the token (HTTP ${code}): check ${this._options.tokenSetting}`
          : `${describe} answered HTTP ${code} ${response.statusMessage ?? ''}`.trim() +
            (code === 404 ? ` (is jupyter-specgen installed there, and is the URL right?)` : '');
      ws.terminate();
    });
    ws.on('error', error => {
      why = why || `cannot reach ${describe}: ${error.message}`;
    });
    ws.on('open', () => {
      this._retryMs = RETRY_MIN_MS;
      this._failure = '';
      this._wake();
      this._options.onOpen();
    });
    ws.on('message', data => this._options.onMessage(String(data)));
    ws.on('close', (code, reason) => {
      if (this._ws !== ws) {
        return;
      }
      this._ws = null;
      this._down(why || `lost the connection to ${describe} (code ${code}${reason.length ? `: ${reason}` : ''})`);
    });
  }

  private _down(why: string): void {
    if (this._disposed) {
      return;
    }
    const delay = this._retryMs;
    this._retryMs = Math.min(delay * 2, RETRY_MAX_MS);
    this._failure = why;
    this._wake();
    this._options.onDown(`${why}; retrying in ${Math.round(delay / 1000)} s`);
    this._timer = setTimeout(() => this._connect(), delay);
  }

  private _drop(): void {
    const ws = this._ws;
    this._ws = null;
    ws?.removeAllListeners();
    ws?.on('error', () => undefined); // a late error of a dropped socket is not news
    ws?.terminate();
  }

  private _wake(): void {
    for (const resolve of this._waiters.splice(0)) {
      resolve();
    }
  }

  private _options: Socket.IOptions;
  private _ws: WebSocket | null = null;
  private _failure = '';
  private _retryMs = RETRY_MIN_MS;
  private _timer: NodeJS.Timeout | undefined;
  private _waiters: (() => void)[] = [];
  private _disposed = false;
}

export namespace Socket {
  export interface IOptions {
    url: string;
    headers: Record<string, string>;
    /** What is at `url`, in words ("the Jupyter server at http://…"). */
    describe: string;
    /** The setting that holds the token, named in the message when it is refused. */
    tokenSetting: string;
    onOpen: () => void;
    onMessage: (raw: string) => void;
    /** The socket is down: why, and when it tries again. */
    onDown: (message: string) => void;
  }
}

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;

/**
 * Waits for the frames of one request: `push` each one; `next` gives them in order, or null when
 * none came within the timeout.
 */
export class Inbox<T> {
  push(frame: T): void {
    this._queue.push(frame);
    this._wake?.();
  }

  async next(timeoutMs: number): Promise<T | null> {
    if (this._queue.length === 0) {
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, timeoutMs);
        this._wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this._wake = null;
    }
    return this._queue.shift() ?? null;
  }

  private _queue: T[] = [];
  private _wake: (() => void) | null = null;
}
