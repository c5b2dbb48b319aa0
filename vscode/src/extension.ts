// The VS Code side of the seam: reads the settings, makes the connection of the chosen mode
// (in "auto" mode, to the server found through the notebook's kernel, discover.ts, by way of the
// Jupyter extension's API), registers the inline completion provider for Python cells of Jupyter
// notebooks and .py files, shows the status bar item, feeds the feedback tracker the edits and
// cursor moves it infers partial accepts and dismissals from, and the run tracker the cells'
// execution summaries that settle accepts. Everything else (completions.ts, feedback.ts,
// outcome.ts, discover.ts and below) runs without VS Code.

import { readFileSync } from 'fs';
import { homedir, userInfo } from 'os';
import * as vscode from 'vscode';

import { BackendSource } from './backend';
import { cellType, CompletionFields } from './context';
import { findServer, IFoundServer, IKernelOutput, relativeTo } from './discover';
import { FeedbackTracker } from './feedback';
import { JupyterSource } from './jupyter';
import { RunTracker } from './outcome';
import { SpecgenCompletions } from './completions';
import type { ICursor, IDocumentSnapshot } from './seam';
import type { ISource } from './source';
import { StatusModel } from './status';

const SELECTOR: vscode.DocumentSelector = [
  { notebookType: 'jupyter-notebook', language: 'python' },
  { scheme: 'file', language: 'python', pattern: '**/*.py' },
  { scheme: 'untitled', language: 'python' }
];

const ACCEPTED_COMMAND = 'specgen.accepted';

export function activate(context: vscode.ExtensionContext): void {
  const item = vscode.window.createStatusBarItem('specgen.status', vscode.StatusBarAlignment.Right, 100);
  item.name = 'Specgen';
  item.command = 'specgen.openPersonalize';
  item.show();
  context.subscriptions.push(item);

  // Kept across reconnects: an accept made before a settings change still waits for its cell's run.
  const runs = new RunTracker({ report: report => current.source.feedback(report) });
  // specgen.mode "auto": the server found through a notebook's kernel (null: the settings' one),
  // and when each notebook was last searched from.
  let found: IFoundServer | null = null;
  const searched = new Map<string, { at: number; done: Promise<void> }>();
  // Bumped when the settings change or on a reconnect: a search started before finds nothing.
  let generation = 0;
  let current = start(item, runs, found);
  const restart = () => {
    current.source.dispose();
    current = start(item, runs, found);
  };
  /** Auto mode: look for the server of `notebook`'s kernel (at most every 30 s while none is found). */
  const search = (notebook: vscode.NotebookDocument): Promise<void> => {
    const key = notebook.uri.toString();
    const last = searched.get(key);
    if (last && (last.at === Infinity || Date.now() - last.at < SEARCH_AGAIN_MS)) {
      return last.done;
    }
    const entry = { at: Date.now(), done: Promise.resolve() };
    const mine = generation;
    entry.done = serverOfKernel(notebook).then(server => {
      if (!server || mine !== generation || !autoMode()) {
        return;
      }
      entry.at = Infinity; // found: not searched again until the settings change or a reconnect
      if (!found || found.url !== server.url || found.token !== server.token) {
        found = server;
        restart();
      } else {
        found = server;
      }
    });
    searched.set(key, entry);
    return entry.done;
  };
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(event => {
      if (event.affectsConfiguration('specgen')) {
        found = null;
        searched.clear();
        generation++;
        restart();
      }
    }),
    { dispose: () => current.source.dispose() },
    vscode.languages.registerInlineCompletionItemProvider(SELECTOR, {
      provideInlineCompletionItems: async (document, position, context, token) => {
        const notebook = notebookOf(document);
        if (notebook && autoMode()) {
          // The first request of a notebook waits a little for its server; later ones do not.
          await Promise.race([search(notebook), new Promise(resolve => setTimeout(resolve, SEARCH_WAIT_MS))]);
        }
        const snapshot = snapshotOf(document, position, found?.rootDir ?? '');
        const explicit = context.triggerKind === vscode.InlineCompletionTriggerKind.Invoke;
        const { items, fields, at } = await current.completions.provide(snapshot, token, { explicit });
        if (!token.isCancellationRequested) {
          current.feedback.offered(at, fields, items);
        }
        return items.map(
          shown =>
            new vscode.InlineCompletionItem(shown.text, new vscode.Range(position, position), {
              title: 'Specgen: suggestion accepted',
              command: ACCEPTED_COMMAND,
              arguments: [fields, shown.text]
            })
        );
      }
    }),
    vscode.commands.registerCommand(ACCEPTED_COMMAND, (fields: CompletionFields | null, text: string) => {
      if (fields) {
        void current.feedback.accepted(fields, text);
      }
    }),
    // What the stable API does not report (partial accepts, dismissals) is inferred from these.
    vscode.workspace.onDidChangeTextDocument(event => {
      current.feedback.changed(
        event.document.uri.toString(),
        event.contentChanges.map(change => ({ offset: change.rangeOffset, removed: change.rangeLength, text: change.text }))
      );
    }),
    // A cell in which a suggestion was accepted ran: the accept is reported again with that run.
    vscode.workspace.onDidChangeNotebookDocument(event => {
      for (const change of event.cellChanges) {
        if (change.executionSummary) {
          void runs.executed(change.cell.document.uri.toString(), change.executionSummary, change.cell.document.getText());
        }
      }
    }),
    vscode.window.onDidChangeTextEditorSelection(event => {
      const selections = event.selections;
      const one = selections.length === 1 && selections[0].isEmpty ? selections[0].active : null;
      current.feedback.moved(event.textEditor.document.uri.toString(), one && event.textEditor.document.offsetAt(one));
    }),
    vscode.commands.registerCommand('specgen.reconnect', () => {
      found = null;
      searched.clear();
      generation++;
      restart();
    }),
    vscode.commands.registerCommand('specgen.openPersonalize', async () => {
      const source = current.source;
      if (!(source instanceof JupyterSource)) {
        void vscode.window.showInformationMessage(
          'Specgen: personalizing needs a Jupyter server running jupyter-specgen (set specgen.mode to "jupyter"); ' +
            'a standalone backend keeps no notebooks to learn from.'
        );
        return;
      }
      await vscode.env.openExternal(vscode.Uri.parse(source.personalizeUrl()));
      void vscode.window.showInformationMessage(
        'Specgen: JupyterLab opened in the browser, at its "Personalize my completions" panel.'
      );
    })
  );
}

export function deactivate(): void {
  // The subscriptions close the connection.
}

/** The connection, provider core, feedback tracker and status model of the current settings. */
function start(
  item: vscode.StatusBarItem,
  runs: RunTracker,
  found: IFoundServer | null
): { source: ISource; completions: SpecgenCompletions; feedback: FeedbackTracker } {
  const config = vscode.workspace.getConfiguration('specgen');
  const mode = config.get<string>('mode') === 'backend' ? 'backend' : 'jupyter';
  let source: ISource;
  let hint = 'Click to personalize your completions on the Jupyter server.';
  if (mode === 'jupyter') {
    const auto = autoMode();
    const server = auto && found ? found : null;
    source = new JupyterSource({
      url: server?.url || config.get<string>('jupyter.url') || 'http://127.0.0.1:8888',
      token: server ? server.token : config.get<string>('jupyter.token') || ''
    });
    if (auto) {
      // Never the token: the URL and why that server.
      hint = server
        ? `The Jupyter server found through the notebook's kernel (it ${server.why}): ${server.url}. ${hint}`
        : `specgen.mode is "auto" and no server was found through a notebook's kernel yet: using specgen.jupyter.url. ${hint}`;
    }
  } else {
    const file = (config.get<string>('backend.tokenFile') || '').replace(/^~(?=$|\/)/, homedir());
    let token = '';
    let tokenError = '';
    try {
      token = file ? readFileSync(file, 'utf8').trim() : process.env.SPECGEN_BACKEND_TOKEN || '';
      tokenError = token ? '' : 'no token: set specgen.backend.tokenFile to the file given to specgen-backend --token-file';
    } catch (reason) {
      tokenError = `cannot read specgen.backend.tokenFile (${file}): ${(reason as Error).message}`;
    }
    source = new BackendSource({
      url: config.get<string>('backend.url') || 'ws://127.0.0.1:8765',
      token,
      tokenError,
      // The backend names requests by user; adapters are used only when the setting names one.
      user: config.get<string>('backend.user') || safeUser(),
      personal: Boolean(config.get<string>('backend.user')),
      candidates: config.get<number>('backend.candidates') || 4,
      temperature: 0.4
    });
  }
  const status = new StatusModel(
    {
      show: view => {
        item.text = view.text;
        item.tooltip = view.tooltip;
        item.backgroundColor =
          view.state === 'error' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
      }
    },
    { mode, hint: mode === 'jupyter' ? hint : '' }
  );
  const completions = new SpecgenCompletions({
    source,
    status,
    timeoutMs: config.get<number>('timeout') || 15000,
    requery
  });
  const feedback = new FeedbackTracker({ report: report => runs.report(report) });
  return { source, completions, feedback };
}

/**
 * More validated items came for `at` after VS Code showed the first: if the cursor is still there,
 * VS Code is asked to query again, and the provider answers from its cache (completions.ts).
 */
function requery(at: ICursor): void {
  const editor = vscode.window.activeTextEditor;
  if (
    editor &&
    editor.document.uri.toString() === at.cellId &&
    editor.document.version === at.version &&
    editor.selections.length === 1 &&
    editor.document.offsetAt(editor.selection.active) === at.offset
  ) {
    void vscode.commands.executeCommand('editor.action.inlineSuggest.trigger');
  }
}

/**
 * The seam's view of the cursor: the cell and its notebook, or the file. Paths are relative to
 * `root` (the found server's root_dir, auto mode) when it holds them, else to the workspace.
 */
function snapshotOf(document: vscode.TextDocument, position: vscode.Position, root: string): IDocumentSnapshot {
  const relative = (uri: vscode.Uri) =>
    (uri.scheme === 'file' && relativeTo(root, uri.fsPath)) || vscode.workspace.asRelativePath(uri, false);
  const base = {
    text: document.getText(),
    offset: document.offsetAt(position),
    cellId: document.uri.toString(),
    version: document.version
  };
  if (document.uri.scheme === 'vscode-notebook-cell') {
    for (const notebook of vscode.workspace.notebookDocuments) {
      const cells = notebook.getCells();
      const active = cells.findIndex(cell => cell.document === document);
      if (active >= 0) {
        return {
          ...base,
          path: relative(notebook.uri),
          notebook: {
            cells: cells.map(cell => ({
              cell_type: cellType(
                cell.kind === vscode.NotebookCellKind.Markup ? 'markup' : 'code',
                cell.document.languageId
              ),
              source: cell.document.getText()
            })),
            active
          }
        };
      }
    }
  }
  return { ...base, path: relative(document.uri), notebook: null };
}

/** The notebook a cell's document belongs to; undefined for a plain file. */
function notebookOf(document: vscode.TextDocument): vscode.NotebookDocument | undefined {
  if (document.uri.scheme !== 'vscode-notebook-cell') {
    return undefined;
  }
  return vscode.workspace.notebookDocuments.find(notebook => notebook.getCells().some(cell => cell.document === document));
}

function autoMode(): boolean {
  return vscode.workspace.getConfiguration('specgen').get<string>('mode') === 'auto';
}

/**
 * What this extension reads of the Jupyter extension's API (ms-toolsai.jupyter, its
 * `@vscode/jupyter-extension` typings): `kernels.getKernel(uri)`, then `executeCode`. Read
 * defensively: any part missing means no kernel.
 */
interface IJupyterKernel {
  language?: string;
  executeCode(code: string, token: vscode.CancellationToken): AsyncIterable<IKernelOutput>;
}

/**
 * The server running jupyter-specgen that `notebook`'s kernel belongs to (discover.ts), when the
 * Jupyter extension gives this extension that kernel (it asks the user once whether to allow
 * it); null otherwise.
 */
async function serverOfKernel(notebook: vscode.NotebookDocument): Promise<IFoundServer | null> {
  let kernel: IJupyterKernel | undefined;
  try {
    const jupyter = vscode.extensions.getExtension('ms-toolsai.jupyter');
    if (!jupyter) {
      return null;
    }
    const api = (jupyter.isActive ? jupyter.exports : await jupyter.activate()) as
      | { kernels?: { getKernel?: (uri: vscode.Uri) => Thenable<IJupyterKernel | undefined> } }
      | undefined;
    kernel = await api?.kernels?.getKernel?.(notebook.uri);
  } catch {
    return null; // refused, or another version of the API
  }
  if (!kernel || typeof kernel.executeCode !== 'function' || (kernel.language && kernel.language !== 'python')) {
    return null;
  }
  const cancel = new vscode.CancellationTokenSource();
  try {
    const server = await findServer({
      execute: code => kernel!.executeCode(code, cancel.token),
      notebookPath: notebook.uri.fsPath,
      timeoutMs: 10_000
    });
    if (!server) {
      cancel.cancel(); // a busy or silent kernel: the snippet is not waited for
    }
    return server;
  } catch {
    return null;
  } finally {
    cancel.dispose();
  }
}

/** How long the first request of a notebook waits for its server (auto mode). */
const SEARCH_WAIT_MS = 2000;

/** How long after a search that found nothing a notebook is searched again (auto mode). */
const SEARCH_AGAIN_MS = 30_000;

/** The OS user name, as the backend accepts user names; 'vscode' when it has other characters. */
function safeUser(): string {
  try {
    const name = userInfo().username;
    return /^[A-Za-z0-9_.@+-]{1,128}$/.test(name) ? name : 'vscode';
  } catch {
    return 'vscode';
  }
}
