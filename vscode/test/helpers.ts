// What the provider tests share: a status sink that records every view, waiting for a state,
// and the notebook snapshots of the tests (the one tests/browser/test_lab.py opens).

import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';

import type { ICell } from '../../labextension/src/protocol';
import type { IKernelOutput } from '../src/discover';
import type { IDocumentSnapshot, IStatusSink, IStatusView } from '../src/seam';

/** Every view the status bar was given, in order. */
export class RecordedStatus implements IStatusSink {
  views: IStatusView[] = [];

  show(view: IStatusView): void {
    this.views.push(view);
  }

  get last(): IStatusView | undefined {
    return this.views[this.views.length - 1];
  }

  /** The first view (from now on or already shown) for which `test` holds, or a rejection after `ms`. */
  async until(test: (view: IStatusView) => boolean, ms: number): Promise<IStatusView> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.views.find(test);
      if (found) {
        return found;
      }
      if (Date.now() > deadline) {
        throw new Error(`no status view matched within ${ms} ms; views: ${JSON.stringify(this.views, null, 1)}`);
      }
      await new Promise(resolve => setTimeout(resolve, 100));
    }
  }
}

/**
 * The cursor at the end of cell `active` of a notebook at `path` made of `cells`; each snapshot
 * is a new version of its cell, as after an edit (the provider caches items by cell, version and
 * cursor: the same snapshot again is the same cursor).
 */
export function notebookAt(path: string, cells: ICell[], active: number, cellId = `${path}#cell${active}`): IDocumentSnapshot {
  const text = cells[active].source;
  return { path, cellId, version: nextVersion(), text, offset: text.length, notebook: { cells, active } };
}

let lastVersion = 0;

/** A document version no snapshot of these tests had. */
export function nextVersion(): number {
  return ++lastVersion;
}

/** Resolves once `test()` holds, or rejects with `what` after `ms`. */
export async function until(test: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!test()) {
    if (Date.now() > deadline) {
      throw new Error(`${what} did not happen within ${ms} ms`);
    }
    await new Promise(resolve => setTimeout(resolve, 20));
  }
}

export function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run this test from tests/browser/test_vscode_provider.py`);
  }
  return value;
}

/**
 * Runs `code` in kernel `kernelId` of the Jupyter server at `url` through its kernel websocket,
 * as VS Code's Jupyter extension does for `Kernel.executeCode` (not stored in the history), and
 * yields the stream outputs in that API's shape (stdout as application/vnd.code.notebook.stdout).
 */
export async function* executeInKernel(url: string, token: string, kernelId: string, code: string): AsyncGenerator<IKernelOutput> {
  const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/api/kernels/${kernelId}/channels`, {
    headers: { Authorization: `token ${token}` }
  });
  const msgId = randomUUID();
  const queue: (IKernelOutput | null | Error)[] = [];
  let wake: (() => void) | null = null;
  const push = (entry: IKernelOutput | null | Error) => {
    queue.push(entry);
    wake?.();
  };
  socket.on('error', error => push(error));
  socket.on('close', () => push(null));
  socket.on('message', raw => {
    const message = JSON.parse(String(raw));
    if (message.parent_header?.msg_id !== msgId) {
      return;
    }
    const type = message.header?.msg_type;
    if (type === 'stream') {
      const mime = message.content.name === 'stderr' ? 'application/vnd.code.notebook.stderr' : 'application/vnd.code.notebook.stdout';
      push({ items: [{ mime, data: new TextEncoder().encode(message.content.text) }] });
    } else if (type === 'error') {
      push(new Error(`${message.content.ename}: ${message.content.evalue}`));
    } else if (type === 'status' && message.content.execution_state === 'idle') {
      push(null);
    }
  });
  socket.on('open', () => {
    socket.send(JSON.stringify({
      header: { msg_id: msgId, msg_type: 'execute_request', username: 'test', session: randomUUID(), version: '5.3', date: '' },
      parent_header: {},
      metadata: {},
      channel: 'shell',
      buffers: [],
      content: { code, silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: false }
    }));
  });
  try {
    for (;;) {
      while (queue.length === 0) {
        await new Promise<void>(resolve => (wake = resolve));
        wake = null;
      }
      const entry = queue.shift()!;
      if (entry === null) {
        return;
      }
      if (entry instanceof Error) {
        throw entry;
      }
      yield entry;
    }
  } finally {
    socket.close();
  }
}
