// The VS Code side of the seam: reads the settings, makes the connection of the chosen mode,
// registers the inline completion provider for Python cells of Jupyter notebooks and .py files,
// shows the status bar item, and feeds the feedback tracker the edits and cursor moves it infers
// partial accepts and dismissals from. Everything else (completions.ts, feedback.ts and below)
// runs without VS Code.

import { readFileSync } from 'fs';
import { homedir, userInfo } from 'os';
import * as vscode from 'vscode';

import { BackendSource } from './backend';
import { cellType, CompletionFields } from './context';
import { FeedbackTracker } from './feedback';
import { JupyterSource } from './jupyter';
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

  let current = start(item);
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(event => {
      if (event.affectsConfiguration('specgen')) {
        current.source.dispose();
        current = start(item);
      }
    }),
    { dispose: () => current.source.dispose() },
    vscode.languages.registerInlineCompletionItemProvider(SELECTOR, {
      provideInlineCompletionItems: async (document, position, context, token) => {
        const snapshot = snapshotOf(document, position);
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
    vscode.window.onDidChangeTextEditorSelection(event => {
      const selections = event.selections;
      const one = selections.length === 1 && selections[0].isEmpty ? selections[0].active : null;
      current.feedback.moved(event.textEditor.document.uri.toString(), one && event.textEditor.document.offsetAt(one));
    }),
    vscode.commands.registerCommand('specgen.reconnect', () => {
      current.source.dispose();
      current = start(item);
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
function start(item: vscode.StatusBarItem): { source: ISource; completions: SpecgenCompletions; feedback: FeedbackTracker } {
  const config = vscode.workspace.getConfiguration('specgen');
  const mode = config.get<string>('mode') === 'backend' ? 'backend' : 'jupyter';
  let source: ISource;
  if (mode === 'jupyter') {
    source = new JupyterSource({
      url: config.get<string>('jupyter.url') || 'http://127.0.0.1:8888',
      token: config.get<string>('jupyter.token') || ''
    });
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
    { mode, hint: mode === 'jupyter' ? 'Click to personalize your completions on the Jupyter server.' : '' }
  );
  const completions = new SpecgenCompletions({
    source,
    status,
    timeoutMs: config.get<number>('timeout') || 15000,
    requery
  });
  const feedback = new FeedbackTracker({ report: report => source.feedback(report) });
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

/** The seam's view of the cursor: the cell and its notebook, or the file. */
function snapshotOf(document: vscode.TextDocument, position: vscode.Position): IDocumentSnapshot {
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
          path: vscode.workspace.asRelativePath(notebook.uri, false),
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
  return { ...base, path: vscode.workspace.asRelativePath(document.uri, false), notebook: null };
}

/** The OS user name, as the backend accepts user names; 'vscode' when it has other characters. */
function safeUser(): string {
  try {
    const name = userInfo().username;
    return /^[A-Za-z0-9_.@+-]{1,128}$/.test(name) ? name : 'vscode';
  } catch {
    return 'vscode';
  }
}
