// What became of an accepted suggestion: when its cell next runs, the accept is reported again
// with that run, as JupyterLab does (labextension/src/completions/feedback.ts, `_onScheduled` and
// `_onExecuted`): the same `IFeedbackReport` with the same `key`, plus `ran` (the cell's text as
// it was sent to the kernel, and whether the run succeeded), to the same `POST specgen/feedback`.
// The server decides from those facts (jupyter_specgen/personalize/feedback.py `accept_outcome`):
// kept (trained on), changed, or raised; until then the accept is stored as pending, which is
// never trained on.
//
// VS Code tells an extension about runs through the cells' execution summaries
// (`onDidChangeNotebookDocument`, `cellChanges[].executionSummary`): a summary without `success`
// is a run that started (the text is taken then, as JupyterLab takes it when the run is
// scheduled), one with `success` a run that ended. extension.ts passes them here as plain data.

import type { IFeedbackReport } from '../../labextension/src/protocol';

/** A cell's execution summary, as far as it is read here (VS Code's NotebookCellExecutionSummary). */
export interface IExecutionSummary {
  /** Set once the run ended: whether it succeeded. */
  success?: boolean;
  executionOrder?: number;
  /** Set once the run ended (VS Code gives both times then). */
  timing?: { startTime: number; endTime: number };
}

export class RunTracker {
  constructor(options: RunTracker.IOptions) {
    this._report = options.report;
  }

  /** How many accepts wait for their cell to run. */
  get waiting(): number {
    return this._accepts.length;
  }

  /**
   * Sends `report` (the feedback tracker's reports go through here); an accept with a key is kept
   * until its cell runs.
   */
  report(report: IFeedbackReport): Promise<number> {
    if (report.accepted && report.key && report.cell_id && !report.ran) {
      this._accepts.push({ report, ranSource: null });
      this._accepts.splice(0, this._accepts.length - MAX_WAITING);
    }
    return this._report(report);
  }

  /**
   * The execution summary of cell `cellId` changed; `source` is the cell's text now. A run that
   * started fixes the text the accepts waiting for that cell are judged by; a run that ended
   * reports each of them with it. Resolves once those reports were sent.
   */
  async executed(cellId: string, summary: IExecutionSummary, source: string): Promise<void> {
    if (typeof summary.success !== 'boolean') {
      for (const accept of this._accepts) {
        if (accept.report.cell_id === cellId && accept.ranSource === null) {
          accept.ranSource = source;
        }
      }
      return;
    }
    // The same ended run seen again (its order or metadata updated later): once is enough.
    const end = summary.timing?.endTime ?? null;
    if (end !== null && this._lastEnd.get(cellId) === end) {
      return;
    }
    if (end !== null) {
      this._lastEnd.set(cellId, end);
      if (this._lastEnd.size > MAX_WAITING) {
        this._lastEnd.delete(this._lastEnd.keys().next().value as string);
      }
    }
    const settled = this._accepts.filter(a => a.report.cell_id === cellId);
    if (!settled.length) {
      return;
    }
    this._accepts = this._accepts.filter(a => a.report.cell_id !== cellId);
    const success = summary.success;
    await Promise.all(
      settled.map(accept =>
        this._report({ ...accept.report, ran: { source: accept.ranSource ?? source, success } }).catch(() => 0)
      )
    );
  }

  private _report: (report: IFeedbackReport) => Promise<number>;
  // Accepts whose cell has not run since, oldest first, with the cell's text once a run started.
  private _accepts: { report: IFeedbackReport; ranSource: string | null }[] = [];
  // The end time of the last ended run seen, per cell.
  private _lastEnd = new Map<string, number>();
}

export namespace RunTracker {
  export interface IOptions {
    /** Sends a report (ISource.feedback): resolves to the HTTP status, 0 when not sent. */
    report: (report: IFeedbackReport) => Promise<number>;
  }
}

/** Accepts waiting for their cell to run, kept at most (the oldest stay pending), as in JupyterLab. */
const MAX_WAITING = 200;
