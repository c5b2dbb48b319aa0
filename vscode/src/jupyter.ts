// Mode (a): a Jupyter server running jupyter-specgen. One websocket to `<url>/specgen/ws`,
// speaking the browser protocol (labextension/src/protocol.ts, generated from
// jupyter_specgen/protocol.py), so a VS Code window is one more tab to the server: kernel specs,
// validation in a fork of the kernel and the user's adapters, when the notebook's kernel lives
// on that server (found through the server's sessions).

import {
  IComplete,
  IErrorInfo,
  IFeedbackReport,
  PROTOCOL_VERSION,
  ServerMessage
} from '../../labextension/src/protocol';
import type { CompletionFields } from './context';
import { IAnswer, Inbox, IRequestOptions, ISource, ISourceStatus, Socket } from './source';

type Frame = Exclude<ServerMessage, { type: 'status' | 'personalize' }> | { type: 'local_error'; error: IErrorInfo };

export class JupyterSource implements ISource {
  constructor(options: JupyterSource.IOptions) {
    this._base = options.url.replace(/\/+$/, '');
    this._token = options.token;
    this._trace = options.trace ?? null;
    const wsUrl = this._base.replace(/^http/, 'ws') + '/specgen/ws';
    this._socket = new Socket({
      url: wsUrl,
      headers: this._token ? { Authorization: `token ${this._token}` } : {},
      describe: `the Jupyter server at ${this._base}`,
      tokenSetting: 'specgen.jupyter.token',
      onOpen: () => this._setStatus({ state: 'starting', model: '', device: '', message: 'connected; waiting for the backend' }),
      onMessage: raw => {
        this._trace?.('received', raw);
        this._onMessage(raw);
      },
      onDown: message => {
        this._failAll(message);
        this._setStatus({ state: 'error', model: '', device: '', message });
      }
    });
  }

  readonly mode = 'jupyter';

  get status(): ISourceStatus {
    return this._status;
  }

  /** The Jupyter server's base URL (no trailing slash). */
  get url(): string {
    return this._base;
  }

  onStatus(listener: (status: ISourceStatus) => void): void {
    this._listeners.push(listener);
  }

  /**
   * The id of the kernel of the notebook at `path` on this server: the session whose path is
   * `path` (VS Code's Jupyter extension names its sessions `<path>-jvsc-<uuid>`), else the only
   * session of a notebook with the same file name. Null when the kernel runs elsewhere.
   */
  async kernelFor(path: string): Promise<string | null> {
    try {
      const response = await fetch(`${this._base}/api/sessions`, { headers: this._headers() });
      if (!response.ok) {
        return null;
      }
      return kernelOfSessions((await response.json()) as JupyterSource.ISession[], path);
    } catch {
      return null; // no server: the request says so itself
    }
  }

  async complete(fields: CompletionFields, options: IRequestOptions): Promise<IAnswer> {
    await this._socket.settled();
    if (options.cancel?.isCancellationRequested) {
      return { items: [], summary: '', rejected: 0, model: '', cancelled: true };
    }
    const id = ++this._lastId;
    const message: IComplete = { type: 'complete', id, version: PROTOCOL_VERSION, ...fields, stream: false };
    const inbox = new Inbox<Frame>();
    this._pending.set(id, inbox);
    if (!this._send(JSON.stringify(message))) {
      this._pending.delete(id);
      return failed(this._socket.failure || 'not connected to the Jupyter server');
    }
    let cancelled = false;
    const listening = options.cancel?.onCancellationRequested(() => {
      cancelled = true;
      inbox.push({ type: 'local_error', error: { type: 'cancelled', message: 'superseded' } });
    });
    try {
      for (;;) {
        const frame = await inbox.next(options.timeoutMs);
        if (frame === null) {
          this._cancel(id);
          return failed(`no answer within ${Math.round(options.timeoutMs / 1000)} s`);
        }
        switch (frame.type) {
          case 'progress':
            options.onProgress?.(frame);
            continue;
          case 'shown':
            // Validated already: the provider may show it before `done` ranks them all.
            options.onShown?.(frame.item);
            continue;
          case 'chunk':
            continue; // not asked for
          case 'done':
            return { items: frame.items, summary: frame.summary, rejected: frame.rejected, model: frame.model };
          case 'error':
          case 'local_error':
            if (cancelled || frame.error.type === 'cancelled') {
              this._cancel(id);
              return { items: [], summary: '', rejected: 0, model: '', cancelled: true };
            }
            return failed(frame.error.message);
          default:
            continue; // download frames are not asked for here
        }
      }
    } finally {
      listening?.dispose();
      this._pending.delete(id);
    }
  }

  async feedback(report: IFeedbackReport): Promise<number> {
    try {
      const response = await fetch(`${this._base}/specgen/feedback`, {
        method: 'POST',
        headers: { ...this._headers(), 'Content-Type': 'application/json' },
        body: JSON.stringify(report)
      });
      return response.status;
    } catch {
      return 0; // best effort: a lost report costs one training example, not the edit
    }
  }

  /** The JupyterLab page, asking it to open the personalize panel. */
  personalizeUrl(): string {
    const token = this._token ? `&token=${encodeURIComponent(this._token)}` : '';
    return `${this._base}/lab?specgen=personalize${token}`;
  }

  reconnect(): void {
    this._socket.reconnect();
  }

  dispose(): void {
    this._socket.dispose();
    this._failAll('the extension is shutting down');
  }

  private _headers(): Record<string, string> {
    return this._token ? { Authorization: `token ${this._token}` } : {};
  }

  private _cancel(id: number): void {
    this._send(JSON.stringify({ type: 'cancel', id, version: PROTOCOL_VERSION }));
  }

  private _send(raw: string): boolean {
    const sent = this._socket.send(raw);
    if (sent) {
      this._trace?.('sent', raw);
    }
    return sent;
  }

  private _onMessage(raw: string): void {
    let message: ServerMessage;
    try {
      message = JSON.parse(raw) as ServerMessage;
    } catch {
      return;
    }
    if (message.version !== PROTOCOL_VERSION) {
      this._setStatus({
        state: 'error',
        model: '',
        device: '',
        message:
          `protocol version ${message.version} from the Jupyter server, ${PROTOCOL_VERSION} in this ` +
          'extension: install the extension built from the same jupyter-specgen release'
      });
      return;
    }
    if (message.type === 'status') {
      this._setStatus({ state: message.state, model: message.model, device: message.device, message: message.message });
      return;
    }
    if (message.type === 'personalize') {
      return;
    }
    const replyTo = message.reply_to;
    if (typeof replyTo === 'number') {
      this._pending.get(replyTo)?.push(message);
    }
  }

  private _failAll(message: string): void {
    for (const inbox of this._pending.values()) {
      inbox.push({ type: 'local_error', error: { type: 'backend_unavailable', message } });
    }
  }

  private _setStatus(status: ISourceStatus): void {
    this._status = status;
    for (const listener of this._listeners) {
      listener(status);
    }
  }

  private _base: string;
  private _token: string;
  private _trace: JupyterSource.ITrace | null;
  private _socket: Socket;
  private _lastId = 0;
  // The frames of each request in flight, by id; a frame for an id not here is stale.
  private _pending = new Map<number, Inbox<Frame>>();
  private _listeners: ((status: ISourceStatus) => void)[] = [];
  private _status: ISourceStatus = { state: 'starting', model: '', device: '', message: 'connecting to the Jupyter server' };
}

export namespace JupyterSource {
  export interface IOptions {
    /** The server's base URL, e.g. http://127.0.0.1:8888 or https://hub/user/alice. */
    url: string;
    token: string;
    /** Sees every frame sent and received (a log, or a test reading what went over the wire). */
    trace?: ITrace;
  }

  export type ITrace = (direction: 'sent' | 'received', raw: string) => void;

  /** What GET api/sessions says of a session, as far as it is read here. */
  export interface ISession {
    path?: string;
    name?: string;
    type?: string;
    kernel?: { id: string } | null;
  }
}

/** See `JupyterSource.kernelFor`. */
export function kernelOfSessions(sessions: JupyterSource.ISession[], path: string): string | null {
  const wanted = normalise(path);
  const withKernel = sessions.filter(s => s.kernel?.id && typeof s.path === 'string');
  const exact = withKernel.find(s => normalise(s.path!) === wanted);
  if (exact) {
    return exact.kernel!.id;
  }
  const name = basename(wanted);
  const same = withKernel.filter(s => basename(normalise(s.path!)) === name);
  return same.length === 1 ? same[0].kernel!.id : null;
}

function normalise(path: string): string {
  return path.replace(/\\/g, '/').replace(/-jvsc-[0-9a-f-]{8,}/gi, '').replace(/^\/+/, '');
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

function failed(error: string): IAnswer {
  return { items: [], summary: '', rejected: 0, model: '', error };
}
