// The `complete` fields for a cursor, as the JupyterLab provider sends them
// (labextension/src/completions/context.ts): the notebook's cells (type and source, markdown
// included: the prompt builder renders it as comments), the active index, the text before and
// after the cursor. A plain .py file sends only the text around the cursor.

import { CompletionFields, fitToLimit } from '../../labextension/src/completions/fit';
import type { ICell } from '../../labextension/src/protocol';
import type { IDocumentSnapshot } from './seam';

export type { CompletionFields } from '../../labextension/src/completions/fit';

export function captureContext(doc: IDocumentSnapshot, kernelId: string | null): CompletionFields {
  const prefix = doc.text.slice(0, doc.offset);
  const suffix = doc.text.slice(doc.offset);
  if (!doc.notebook) {
    return { path: doc.path, cell_id: doc.cellId, prefix, suffix, cells: [], active: -1, kernel_id: kernelId };
  }
  const { cells, active } = doc.notebook;
  return fitToLimit({
    path: doc.path,
    cell_id: doc.cellId,
    prefix,
    suffix,
    cells: cells.map(cell => ({ cell_type: cell.cell_type, source: cell.source })),
    active,
    kernel_id: kernelId
  });
}

/** VS Code's cell kinds and languages to the three cell types the prompt builder knows. */
export function cellType(kind: 'code' | 'markup', language: string): ICell['cell_type'] {
  if (kind === 'markup' || language === 'markdown') {
    return 'markdown';
  }
  return language === 'raw' ? 'raw' : 'code';
}
