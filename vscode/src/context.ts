// The `complete` fields for a cursor, as the JupyterLab provider sends them
// (labextension/src/completions/context.ts): the notebook's cells (type and source, markdown
// included: the prompt builder renders it as comments), the active index, the text before and
// after the cursor. A plain .py file sends only the text around the cursor.

import { ICell, IComplete, MAX_MESSAGE_BYTES } from '../../labextension/src/protocol';
import type { IDocumentSnapshot } from './seam';

/** The fields of a `complete` message that the connection does not fill in itself. */
export type CompletionFields = Omit<IComplete, 'type' | 'id' | 'version'>;

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

/**
 * Empty the sources of the cells farthest from the active one until the message fits the
 * server's frame limit (with room for the framing), so that a huge notebook still completes.
 */
function fitToLimit(fields: CompletionFields): CompletionFields {
  const budget = MAX_MESSAGE_BYTES - 1024;
  const cells = fields.cells ?? [];
  let size = Buffer.byteLength(JSON.stringify(fields));
  if (size <= budget) {
    return fields;
  }
  const active = fields.active ?? -1;
  const byDistance = cells
    .map((_, index) => index)
    .filter(index => index !== active)
    .sort((a, b) => Math.abs(b - active) - Math.abs(a - active));
  const trimmed = cells.map(cell => ({ ...cell }));
  for (const index of byDistance) {
    if (size <= budget) {
      break;
    }
    size -= Buffer.byteLength(JSON.stringify(trimmed[index].source)) - 2;
    trimmed[index].source = '';
  }
  return { ...fields, cells: trimmed };
}
