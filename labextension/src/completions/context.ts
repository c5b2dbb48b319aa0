// What the server needs to know about where the cursor is: the notebook around the edited cell,
// its path, the cell's id and the kernel's id, captured from JupyterLab's completion context.

import type { CompletionHandler, IInlineCompletionContext } from '@jupyterlab/completer';
import { NotebookPanel } from '@jupyterlab/notebook';

import { ICell } from '../protocol';
import { CompletionFields, fitToLimit } from './fit';

export type { CompletionFields } from './fit';

/**
 * Build the `complete` fields for `request` made in `context.widget`.
 *
 * Notebooks send every cell (type and source) and the active index; other editors (consoles,
 * files) send only the text around the cursor, keyed by the widget id.
 */
export function captureContext(
  request: CompletionHandler.IRequest,
  context: IInlineCompletionContext
): CompletionFields {
  const prefix = request.text.slice(0, request.offset);
  const suffix = request.text.slice(request.offset);
  const widget = context.widget;
  const session = context.session ?? null;

  if (widget instanceof NotebookPanel) {
    const notebook = widget.content;
    const cells: ICell[] = [];
    for (const cell of widget.model?.cells ?? []) {
      cells.push({
        cell_type: cellType(cell.type),
        source: cell.sharedModel.getSource()
      });
    }
    const active = notebook.activeCellIndex;
    const fields: CompletionFields = {
      path: widget.context.path,
      cell_id: notebook.activeCell?.model.id ?? widget.id,
      prefix,
      suffix,
      cells,
      active,
      kernel_id:
        session?.kernel?.id ?? widget.sessionContext.session?.kernel?.id ?? null
    };
    return fitToLimit(fields);
  }

  return {
    path: session?.path ?? pathOf(widget) ?? '',
    cell_id: widget.id,
    prefix,
    suffix,
    cells: [],
    active: -1,
    kernel_id: session?.kernel?.id ?? null
  };
}

/** nbformat allows other cell types; the prompt builder knows these three. */
function cellType(type: string): ICell['cell_type'] {
  return type === 'code' || type === 'markdown' ? type : 'raw';
}

/** The document path of a document widget (file editor), found without importing docregistry. */
function pathOf(widget: unknown): string | null {
  const context = (widget as { context?: { path?: unknown } }).context;
  return typeof context?.path === 'string' ? context.path : null;
}
