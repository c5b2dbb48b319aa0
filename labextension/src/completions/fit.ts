// The fields of a `complete` message, and the rule that fits them into one websocket frame: shared
// by the JupyterLab provider (context.ts) and the VS Code extension (vscode/src/context.ts), so
// nothing here imports JupyterLab.

import { IComplete, MAX_MESSAGE_BYTES } from '../protocol';

/** The fields of a `complete` message that the connection does not fill in itself. */
export type CompletionFields = Omit<IComplete, 'type' | 'id' | 'version'>;

/**
 * Empty the sources of the cells farthest from the active one until the message fits the
 * server's frame limit (with room for the framing), so that a huge notebook still completes.
 */
export function fitToLimit(fields: CompletionFields): CompletionFields {
  const budget = MAX_MESSAGE_BYTES - 1024;
  const cells = fields.cells ?? [];
  let size = byteLength(JSON.stringify(fields));
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
    size -= byteLength(JSON.stringify(trimmed[index].source)) - 2;
    trimmed[index].source = '';
  }
  return { ...fields, cells: trimmed };
}

function byteLength(text: string): number {
  return new TextEncoder().encode(text).length;
}
