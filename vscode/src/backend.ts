// Mode (b): a standalone `specgen-backend serve` (a GPU host), spoken to in the backend's own
// protocol (backend_protocol.ts, generated from backend/specgen_backend/protocol.py). No Jupyter
// server stands between: no kernel specs, no validation. Every candidate is shown, marked
// "not validated", ranked by the model's likelihood.

import type { IItem } from '../../labextension/src/protocol';
import {
  BACKEND_PROTOCOL_VERSION,
  BackendMessage,
  ICancel,
  IErrorInfo,
  IGenerate,
  IStatusRequest
} from './backend_protocol';
import type { CompletionFields } from './context';
import { IAnswer, Inbox, IRequestOptions, ISource, ISourceStatus, Socket } from './source';

/** The detail every standalone item carries (the status bar's tooltip shows it). */
export const NOT_VALIDATED_DETAIL =
  'not validated: standalone specgen-backend (no Jupyter server, so no kernel specs and no run in a sandbox)';

type Frame = Exclude<BackendMessage, { type: 'status' }> | { type: 'local_error'; error: IErrorInfo };

export class BackendSource implements ISource {
  constructor(options: BackendSource.IOptions) {
    this._options = options;
    if (options.tokenError) {
      this._status = { state: 'error', model: '', device: '', message: options.tokenError };
    }
    this._socket = new Socket({
      url: options.url,
      headers: { Authorization: `Bearer ${options.token}` },
      describe: `the specgen-backend at ${options.url}`,
      tokenSetting: 'specgen.backend.tokenFile',
      onOpen: () => {
        const ask: IStatusRequest = { type: 'status_request', id: 'status', version: BACKEND_PROTOCOL_VERSION };
        this._socket.send(JSON.stringify(ask));
      },
      onMessage: raw => this._onMessage(raw),
      onDown: message => {
        for (const inbox of this._pending.values()) {
          inbox.push({ type: 'local_error', error: { type: 'backend_unavailable', message } });
        }
        this._setStatus({ state: 'error', model: '', device: '', message: options.tokenError || message });
      }
    });
  }

  readonly mode = 'backend';

  get status(): ISourceStatus {
    return this._status;
  }

  onStatus(listener: (status: ISourceStatus) => void): void {
    this._listeners.push(listener);
  }

  async kernelFor(): Promise<string | null> {
    return null; // no Jupyter server: no kernel to read or run in
  }

  async complete(fields: CompletionFields, options: IRequestOptions): Promise<IAnswer> {
    await this._socket.settled();
    if (options.cancel?.isCancellationRequested) {
      return { items: [], summary: '', rejected: 0, model: '', cancelled: true };
    }
    const id = ++this._lastId;
    const { prefix, suffix = '', cells = [], active = -1 } = fields;
    const midLine = (suffix.split('\n')[0] ?? '').trim() !== '';
    const message: IGenerate = {
      type: 'generate',
      id,
      user: this._options.user,
      context: { prefix, suffix, cells, active, preamble: '' },
      n: this._options.candidates,
      // As the server extension does: inside a line, the rest of one statement; else a few lines.
      max_tokens: midLine ? 24 : 48,
      temperature: this._options.temperature,
      adapters: [],
      stop: [],
      version: BACKEND_PROTOCOL_VERSION,
      deadline_ms: options.timeoutMs,
      personal: this._options.personal,
      constraint: null
    };
    const inbox = new Inbox<Frame>();
    this._pending.set(id, inbox);
    if (!this._socket.send(JSON.stringify(message))) {
      this._pending.delete(id);
      return failed(this._socket.failure || 'not connected to the specgen-backend');
    }
    options.onProgress?.({ stage: 'generating', done: 0, total: message.n, message: '' });
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
          case 'token':
          case 'candidate_end':
            continue;
          case 'result': {
            const items = itemsOf(frame.candidates);
            return {
              items,
              summary: items.length ? '' : 'the model wrote nothing here',
              rejected: 0,
              model: frame.model
            };
          }
          case 'error':
          case 'local_error':
            if (cancelled || frame.error.type === 'cancelled') {
              this._cancel(id);
              return { items: [], summary: '', rejected: 0, model: '', cancelled: true };
            }
            return failed(frame.error.message);
          default:
            continue;
        }
      }
    } finally {
      listening?.dispose();
      this._pending.delete(id);
    }
  }

  async feedback(): Promise<number> {
    return 0; // the feedback store lives in the Jupyter server; a standalone backend keeps none
  }

  reconnect(): void {
    this._socket.reconnect();
  }

  dispose(): void {
    this._socket.dispose();
  }

  private _cancel(id: number): void {
    const message: ICancel = { type: 'cancel', id, version: BACKEND_PROTOCOL_VERSION };
    this._socket.send(JSON.stringify(message));
  }

  private _onMessage(raw: string): void {
    let message: BackendMessage;
    try {
      message = JSON.parse(raw) as BackendMessage;
    } catch {
      return;
    }
    if (message.type === 'status') {
      this._setStatus({
        state: message.state === 'loading' ? 'starting' : message.state,
        model: message.model,
        device: message.device,
        message: message.message
      });
      return;
    }
    if (typeof message.reply_to === 'number') {
      this._pending.get(message.reply_to)?.push(message);
    }
  }

  private _setStatus(status: ISourceStatus): void {
    this._status = status;
    for (const listener of this._listeners) {
      listener(status);
    }
  }

  private _options: BackendSource.IOptions;
  private _socket: Socket;
  private _lastId = 0;
  private _pending = new Map<number, Inbox<Frame>>();
  private _listeners: ((status: ISourceStatus) => void)[] = [];
  private _status: ISourceStatus = { state: 'starting', model: '', device: '', message: 'connecting to the specgen-backend' };
}

export namespace BackendSource {
  export interface IOptions {
    /** ws://host:port of `specgen-backend serve`. */
    url: string;
    token: string;
    /** Set when the token file could not be read: the status says so (the backend will refuse). */
    tokenError?: string;
    /** The user name the backend knows the requests by (letters, digits, '_.@+-'). */
    user: string;
    /** Sample with `user`'s published adapters (the base model when they have none). */
    personal: boolean;
    candidates: number;
    temperature: number;
  }
}

/** Distinct non-blank candidates, most likely first, as not-validated items. */
function itemsOf(candidates: { text: string; logprob: number; adapter: string | null }[]): IItem[] {
  const seen = new Set<string>();
  return [...candidates]
    .sort((a, b) => b.logprob - a.logprob)
    .filter(c => {
      const key = c.text.trimEnd();
      if (!key.trim() || seen.has(key)) {
        return false;
      }
      seen.add(key);
      return true;
    })
    .map(c => ({
      text: c.text,
      verdict: 'not_validated' as const,
      detail: NOT_VALIDATED_DETAIL,
      score: c.logprob,
      adapter: c.adapter ?? ''
    }));
}

function failed(error: string): IAnswer {
  return { items: [], summary: '', rejected: 0, model: '', error };
}
