// The "Personalize my completions" panel: the model in use, why it was chosen, and the one-click
// download of a better one while the embedded model serves (Model, shared with the status bar
// through `ModelOffer`); what a job would train on (Data), starting and following
// a job (Train), what it measured and whether it published (Result), and the adapters' versions
// with rollback (Versions). State comes from `GET specgen/personalize` on open and then from the
// `personalize` messages the server pushes over the tab's websocket at every step of a job.
//
// Every count and term is said in plain words next to it (`dataTerms`): what an example is, what
// "held-out" means, which suggestions are used and why. "Start training" is disabled, with the
// server's reason, when the data cannot be measured on (fewer than two notebooks), and the
// server's estimate of the job's duration is shown before it starts.

import type { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { SpecgenConnection } from '../connection';
import { ModelOffer } from '../model';
import {
  IAdapterInfo,
  IDataSummary,
  IJobState,
  IPersonalize,
  IVersionInfo
} from '../protocol';
import * as api from './api';
import { buildPlot, formatValue } from './plot';

/**
 * The personalize panel, shown in a MainAreaWidget by the `specgen:personalize` command.
 */
export class PersonalizePanel extends Widget {
  constructor(options: PersonalizePanel.IOptions) {
    super();
    this._connection = options.connection;
    this._serverSettings = options.serverSettings;
    this._offer = options.offer ?? null;
    this.addClass('jp-specgen-personalize');
    this._build();
    this._offer?.changed.connect(this._renderModel, this);
    this._renderModel();
    this._connection.personalizeChanged.connect(this._onPersonalize, this);
    void this.refreshData();
    void this.refreshState();
  }

  /** Scan the notebooks again and show what a job would train on. */
  async refreshData(): Promise<void> {
    const token = ++this._dataToken;
    this._dataRefresh.disabled = true;
    this._dataStatus.textContent = 'Scanning notebooks…';
    this._dataError.hidden = true;
    try {
      const summary = await api.getDataSummary(this._serverSettings);
      if (token === this._dataToken && !this.isDisposed) {
        this._renderData(summary);
      }
    } catch (reason) {
      if (token === this._dataToken && !this.isDisposed) {
        showError(this._dataError, reason);
        this._dataStatus.textContent = '';
      }
    } finally {
      if (token === this._dataToken && !this.isDisposed) {
        this._dataRefresh.disabled = false;
      }
    }
  }

  /** Ask the server for the job and adapters (the websocket keeps them current afterwards). */
  async refreshState(): Promise<void> {
    try {
      this._apply(await api.getPersonalize(this._serverSettings));
    } catch (reason) {
      showError(this._trainError, reason);
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._connection.personalizeChanged.disconnect(this._onPersonalize, this);
    this._offer?.changed.disconnect(this._renderModel, this);
    super.dispose();
  }

  private _onPersonalize(_: SpecgenConnection, state: IPersonalize): void {
    this._apply(state);
  }

  /** Show `state` in the Train, Result and Versions sections. */
  private _apply(state: IPersonalize): void {
    if (this.isDisposed) {
      return;
    }
    this._state = state;
    this._renderTrain(state.job);
    this._renderResult(state.job);
    this._renderVersions(state);
  }

  private _build(): void {
    const node = this.node;
    const header = element('h2', 'jp-specgen-personalize-title');
    header.textContent = 'Personalize my completions';
    const intro = element('p', 'jp-specgen-personalize-intro');
    intro.textContent =
      'Train an adapter on the code cells of your notebooks that ran without error, measure it ' +
      'on notebooks it did not see, and use it for your completions if it does better.';
    node.append(header, intro);

    // Model: what the suggestions and the adapters build on, and a better one to fetch
    const model = section(node, 'Model', 'model');
    this._model = element('p', 'jp-specgen-personalize-model');
    this._model.dataset.testid = 'specgen-model';
    this._modelOffer = element('div', 'jp-specgen-download');
    model.body.append(this._model, this._modelOffer);

    // Data
    const data = section(node, 'Data', 'data');
    this._dataRefresh = button('Refresh', 'specgen-data-refresh', () => {
      void this.refreshData();
    });
    data.heading.append(this._dataRefresh);
    this._dataStatus = element('p', 'jp-specgen-personalize-summary');
    this._dataStatus.dataset.testid = 'specgen-data-summary';
    this._dataDetails = element('div', 'jp-specgen-personalize-data-details');
    this._dataError = errorBox('specgen-data-error');
    data.body.append(this._dataStatus, this._dataDetails, this._dataError);

    // Train
    const train = section(node, 'Train', 'train');
    this._start = button('Start training', 'specgen-start', () => {
      void this._startJob();
    });
    this._start.classList.add('jp-mod-accept');
    this._cancel = button('Cancel', 'specgen-cancel', () => {
      void this._cancelJob();
    });
    this._cancel.hidden = true;
    const buttons = element('div', 'jp-specgen-personalize-buttons');
    buttons.append(this._start, this._cancel);
    this._progress = document.createElement('progress');
    this._progress.className = 'jp-specgen-personalize-progress';
    this._progress.dataset.testid = 'specgen-progress';
    this._progress.hidden = true;
    this._phase = element('p', 'jp-specgen-personalize-phase');
    this._phase.dataset.testid = 'specgen-phase';
    this._phase.setAttribute('aria-live', 'polite');
    this._trainError = errorBox('specgen-train-error');
    this._refusal = element('p', 'jp-specgen-personalize-refusal');
    this._refusal.dataset.testid = 'specgen-refusal';
    this._refusal.hidden = true;
    this._estimate = element('p', 'jp-specgen-personalize-estimate');
    this._estimate.dataset.testid = 'specgen-estimate';
    this._estimate.hidden = true;
    train.body.append(
      this._refusal,
      this._estimate,
      buttons,
      this._progress,
      this._phase,
      this._trainError
    );

    // Result
    const result = section(node, 'Result', 'result');
    this._result = element('div', 'jp-specgen-personalize-result');
    this._result.dataset.testid = 'specgen-result';
    this._result.textContent = 'No job has finished yet.';
    result.body.append(this._result);

    // Versions
    const versions = section(node, 'Versions', 'versions');
    this._versions = element('div', 'jp-specgen-personalize-versions');
    this._versions.dataset.testid = 'specgen-versions';
    this._versions.textContent = 'No adapter published yet.';
    this._versionsError = errorBox('specgen-versions-error');
    versions.body.append(this._versions, this._versionsError);
  }

  /** The model in use, why it was chosen, and the offer (or download) of a better one. */
  private _renderModel(): void {
    const status = this._offer?.status ?? null;
    if (!status || status.state !== 'ready') {
      this._model.textContent =
        status?.state === 'error'
          ? `The model backend failed: ${status.message}`
          : 'The model backend is starting…';
    } else {
      const where = status.device ? ` on ${status.device}` : '';
      const why = status.reason ? ` Why this model: ${status.reason}` : '';
      this._model.textContent = `Completions come from ${status.model}${where}.${why}`;
    }
    this._offer?.render(this._modelOffer);
  }

  private _renderData(summary: IDataSummary): void {
    const notebooks = (count: number): string =>
      `${count} notebook${count === 1 ? '' : 's'}`;
    this._dataStatus.textContent =
      `${summary.train} training example${summary.train === 1 ? '' : 's'} from ` +
      `${notebooks(summary.notebooks_train.length)}; ` +
      `${summary.heldout} held-out from ${notebooks(summary.notebooks_heldout.length)}.`;
    this._dataStatus.dataset.train = String(summary.train);
    this._dataStatus.dataset.accepted = String(summary.feedback_accepted);
    this._dataStatus.dataset.rejected = String(summary.feedback_rejected);
    this._dataStatus.dataset.kept = String(summary.feedback_kept);

    const details = this._dataDetails;
    details.replaceChildren();
    const root = element('p', 'jp-specgen-personalize-root');
    root.textContent = `Scanned ${summary.root || 'the Jupyter root'}.`;
    details.append(root);
    const terms = element('ul', 'jp-specgen-personalize-terms');
    terms.dataset.testid = 'specgen-data-terms';
    for (const line of dataTerms(summary)) {
      const item = element('li', '');
      item.textContent = line;
      terms.append(item);
    }
    details.append(terms);
    if (summary.examples.length) {
      details.append(examplesList(summary));
    }
    this._renderReadiness(summary);
    details.append(
      list('Training notebooks', summary.notebooks_train, 'specgen-notebooks-train'),
      list('Held-out notebooks', summary.notebooks_heldout, 'specgen-notebooks-heldout')
    );
    const notes: string[] = [];
    if (summary.truncated) {
      notes.push('There are more notebooks than one scan reads; the newest were used.');
    }
    if (summary.left_out) {
      notes.push(
        `${summary.left_out} example(s) are beyond what one job uploads (oldest notebooks first).`
      );
    }
    for (const text of notes) {
      const note = element('p', 'jp-specgen-personalize-note');
      note.textContent = text;
      details.append(note);
    }
    if (summary.skipped.length || summary.dropped.length) {
      const more = document.createElement('details');
      more.className = 'jp-specgen-personalize-skipped';
      const title = document.createElement('summary');
      const droppedCells = summary.dropped.reduce((sum, d) => sum + d.count, 0);
      title.textContent =
        `${summary.skipped.length} notebook(s) skipped, ` +
        `${droppedCells} cell(s) not used`;
      more.append(title);
      if (summary.skipped.length) {
        more.append(
          list(
            'Skipped notebooks',
            summary.skipped.map(s => `${s.path}: ${s.reason}`),
            'specgen-skipped'
          )
        );
      }
      if (summary.dropped.length) {
        more.append(
          list(
            'Cells not used',
            summary.dropped.map(d => `${d.count} ${d.reason}`),
            'specgen-dropped'
          )
        );
      }
      details.append(more);
    }
  }

  /** The refusal (Start disabled, with the reason) or the estimate, from the data summary. */
  private _renderReadiness(summary: IDataSummary): void {
    this._refused = summary.refusal;
    this._refusal.textContent = summary.refusal;
    this._refusal.hidden = !summary.refusal;
    const estimate = summary.estimate;
    this._estimate.hidden = !estimate;
    if (estimate) {
      this._estimate.textContent =
        `Training would take ${estimate.text}: ${estimate.how}.`;
      this._estimate.dataset.seconds = String(estimate.seconds);
      this._estimate.dataset.steps = String(estimate.steps);
    }
    this._renderTrain(this._state?.job ?? null);
  }

  private _renderTrain(job: IJobState | null): void {
    const running = job?.state === 'running';
    this._start.disabled = running || this._busy || this._refused !== '';
    this._start.title = !running && this._refused ? this._refused : '';
    this._cancel.hidden = !running;
    this._cancel.disabled = this._busy;
    this._progress.hidden = !running;
    if (!job) {
      this._phase.textContent = '';
      this._phase.dataset.state = '';
      return;
    }
    this._phase.dataset.state = job.state;
    this._phase.dataset.phase = job.phase;
    if (running) {
      this._phase.textContent = phaseText(job);
      if (job.total > 0 && STEPPED_PHASES.has(job.phase)) {
        this._progress.max = job.total;
        this._progress.value = Math.min(job.step, job.total);
      } else {
        this._progress.removeAttribute('value'); // indeterminate
      }
      this._progress.setAttribute('aria-valuetext', this._phase.textContent);
      return;
    }
    switch (job.state) {
      case 'done':
        this._phase.textContent = `The job started ${formatTime(job.started)} finished.`;
        break;
      case 'failed':
        this._phase.textContent = `The job failed: ${job.error || 'no reason given'}`;
        break;
      case 'cancelled':
        this._phase.textContent = 'The job was cancelled.';
        break;
    }
  }

  private _renderResult(job: IJobState | null): void {
    const report = job?.state === 'done' ? job.report : null;
    const key = report ? JSON.stringify(report) : `none:${job?.state ?? ''}`;
    if (key === this._resultKey) {
      return; // unchanged: progress pushes must not rebuild the chart
    }
    this._resultKey = key;
    const result = this._result;
    result.replaceChildren();
    delete result.dataset.published;
    if (!report) {
      result.textContent =
        job?.state === 'running'
          ? 'The result appears here when the job finishes.'
          : 'No job has finished yet.';
      return;
    }
    result.dataset.published = String(report.published);
    const verdict = element('p', 'jp-specgen-personalize-verdict');
    verdict.dataset.testid = 'specgen-verdict';
    verdict.textContent = report.published
      ? `Published ${report.version ?? 'a new version'}: your completions now use it.`
      : 'Not published: your completions keep what they used before.';
    const reason = element('p', 'jp-specgen-personalize-reason');
    reason.textContent = report.reason;
    const counts = element('p', 'jp-specgen-personalize-counts');
    counts.textContent =
      `Trained on ${report.train_examples} example(s), measured on ` +
      `${report.heldout_examples} held-out cell(s) (cells of notebooks kept aside, never ` +
      'trained on).';
    const legend = element('p', 'jp-specgen-personalize-note');
    legend.textContent =
      'Exact match: the share of held-out cells written exactly as you wrote them. ' +
      'Edit similarity: how close the writing is to yours (1 is the same). ' +
      'Executable: the share that ran without error.';
    result.append(verdict, reason, counts, legend);
    result.append(
      buildPlot({
        before: report.before,
        after: report.after,
        beforeLabel: `before (${report.before_label || 'base'})`,
        afterLabel: `after (${report.version ?? 'new'})`
      })
    );
    if (report.variants_version) {
      const variants = element('p', 'jp-specgen-personalize-note');
      variants.textContent =
        `Variants ${report.variants_version}: ${report.variant_groups.length} group(s) ` +
        `of ${report.variant_groups.join(', ')} example(s).`;
      result.append(variants);
    }
  }

  private _renderVersions(state: IPersonalize): void {
    const key = JSON.stringify([state.adapters, state.enabled, this._busy]);
    if (key === this._versionsKey) {
      return;
    }
    this._versionsKey = key;
    const root = this._versions;
    root.replaceChildren();
    const adapters = state.adapters.filter(a => a.versions.length > 0);
    if (!adapters.length) {
      root.textContent = 'No adapter published yet.';
      return;
    }
    if (!state.enabled) {
      const off = element('p', 'jp-specgen-personalize-note');
      off.textContent =
        'Personalized adapters are turned off on this server: completions use the base model.';
      root.append(off);
    }
    for (const adapter of adapters) {
      root.append(this._adapterBlock(adapter));
    }
  }

  private _adapterBlock(adapter: IAdapterInfo): HTMLElement {
    const block = element('div', 'jp-specgen-personalize-adapter');
    block.dataset.adapter = adapter.name;
    const title = element('h4', 'jp-specgen-personalize-adapter-name');
    title.textContent =
      adapter.name === 'personal' ? 'Your adapter (personal)' : adapter.name;
    block.append(title);
    const versions = [...adapter.versions].sort((a, b) => a.created - b.created);
    const items = element('ul', 'jp-specgen-personalize-version-list');
    for (const info of versions) {
      items.append(versionItem(info, info.version === adapter.current));
    }
    block.append(items);
    if (!adapter.current) {
      const none = element('p', 'jp-specgen-personalize-note');
      none.textContent = 'No version in service.';
      block.append(none);
    }
    const index = versions.findIndex(v => v.version === adapter.current);
    if (index > 0) {
      const previous = versions[index - 1].version;
      const rollback = button(
        `Roll back to ${previous}`,
        'specgen-rollback',
        () => {
          void this._rollback(adapter.name, previous);
        }
      );
      rollback.dataset.adapter = adapter.name;
      rollback.disabled = this._busy;
      block.append(rollback);
    }
    return block;
  }

  private async _startJob(): Promise<void> {
    await this._act(this._trainError, () => api.startJob(this._serverSettings));
  }

  private async _cancelJob(): Promise<void> {
    await this._act(this._trainError, () => api.cancelJob(this._serverSettings));
  }

  private async _rollback(adapter: string, to: string): Promise<void> {
    await this._act(this._versionsError, () =>
      api.rollback(this._serverSettings, { adapter, to })
    );
  }

  /** Run one request with the buttons disabled; show its answer, or its error in `errorNode`. */
  private async _act(
    errorNode: HTMLElement,
    call: () => Promise<IPersonalize>
  ): Promise<void> {
    if (this._busy) {
      return;
    }
    this._setBusy(true);
    this._trainError.hidden = true;
    this._versionsError.hidden = true;
    try {
      const state = await call();
      this._setBusy(false);
      this._apply(state);
    } catch (reason) {
      this._setBusy(false);
      showError(errorNode, reason);
    }
  }

  private _setBusy(busy: boolean): void {
    this._busy = busy;
    if (this._state) {
      this._renderTrain(this._state.job);
      this._renderVersions(this._state);
    } else {
      this._start.disabled = busy || this._refused !== '';
    }
  }

  private _connection: SpecgenConnection;
  private _offer: ModelOffer | null;
  private _model!: HTMLElement;
  private _modelOffer!: HTMLElement;
  private _serverSettings: ServerConnection.ISettings;
  private _state: IPersonalize | null = null;
  // A request from a button is in flight: the buttons wait for its answer.
  private _busy = false;
  // Increases per data scan, so that a slow older scan cannot overwrite a newer one.
  private _dataToken = 0;
  // What the Result and Versions sections show, to rebuild them only when it changes.
  private _resultKey = '';
  private _versionsKey = '';
  private _dataRefresh!: HTMLButtonElement;
  private _dataStatus!: HTMLElement;
  private _dataDetails!: HTMLElement;
  private _dataError!: HTMLElement;
  private _start!: HTMLButtonElement;
  private _cancel!: HTMLButtonElement;
  private _progress!: HTMLProgressElement;
  private _phase!: HTMLElement;
  private _trainError!: HTMLElement;
  // Why the data cannot be trained on ('' when it can): Start stays disabled and says so.
  private _refused = '';
  private _refusal!: HTMLElement;
  private _estimate!: HTMLElement;
  private _result!: HTMLElement;
  private _versions!: HTMLElement;
  private _versionsError!: HTMLElement;
}

/**
 * A namespace for PersonalizePanel statics.
 */
export namespace PersonalizePanel {
  export interface IOptions {
    /** The tab's websocket, whose `personalizeChanged` carries job progress. */
    connection: SpecgenConnection;
    /** For the REST calls (base URL, token, XSRF). */
    serverSettings: ServerConnection.ISettings;
    /** The model in use and the offer of a better one (shared with the status bar). */
    offer?: ModelOffer;
  }
}

/** One line per count of the data summary, in plain words. */
export function dataTerms(summary: IDataSummary): string[] {
  const plural = (n: number, one: string, many: string): string =>
    `${n} ${n === 1 ? one : many}`;
  const cells = summary.train - summary.from_feedback;
  const kept = plural(summary.from_feedback, 'suggestion', 'suggestions');
  const lines = [
    `${plural(summary.train, 'training example', 'training examples')}: what the adapter learns ` +
      `from, ${plural(cells, 'cell', 'cells')} you wrote that ran without error (each teaches ` +
      `the cell from the notebook above it) and ${kept} you kept.`,
    `${plural(summary.heldout, 'held-out example', 'held-out examples')}: from notebooks kept ` +
      'aside, never trained on, to measure whether training helps.',
    `${plural(summary.with_specs, 'example carries', 'examples carry')} an execution spec: what ` +
      "the cell read (types, shapes, columns), from the kernel's record of the cells you ran.",
    `${plural(summary.feedback_kept, 'suggestion', 'suggestions')} you kept (still in the cell ` +
      'when it ran without error): used for training.',
    `${summary.feedback_pending} accepted, waiting for the cell to run: used once it runs ` +
      'without error with the suggestion still in it.',
    `${summary.feedback_rejected} you typed over or dismissed with Escape: counted, not used.`
  ];
  if (summary.feedback_changed) {
    lines.push(
      `${summary.feedback_changed} accepted, then deleted or rewritten before the cell ran: ` +
        'not used.'
    );
  }
  if (summary.feedback_raised) {
    lines.push(
      `${summary.feedback_raised} accepted, and the cell then raised an error: not used.`
    );
  }
  if (summary.feedback_unchecked) {
    lines.push(
      `${summary.feedback_unchecked} suggestion(s) recorded before these checks existed: not used.`
    );
  }
  return lines;
}

/** The examples with the reason each one is used (a collapsed list). */
function examplesList(summary: IDataSummary): HTMLElement {
  const more = document.createElement('details');
  more.className = 'jp-specgen-personalize-examples';
  more.dataset.testid = 'specgen-examples';
  const title = document.createElement('summary');
  const total = summary.train + summary.heldout;
  title.textContent =
    `Why each example is used (${summary.examples.length}` +
    (summary.examples.length < total ? ` of ${total} listed)` : ')');
  more.append(title);
  const items = element('ul', '');
  for (const e of summary.examples) {
    const item = element('li', '');
    item.dataset.split = e.split;
    const where = e.cell_index >= 0 ? `${e.notebook}, cell ${e.cell_index + 1}` : e.notebook;
    const side = e.split === 'heldout' ? 'held out to measure' : 'trained on';
    item.textContent = `${where}: ${e.preview} (${side}; ${e.reason})`;
    items.append(item);
  }
  more.append(items);
  return more;
}

/** Phases that report step/total (and loss). */
const STEPPED_PHASES = new Set(['train', 'variants']);

/** What the job is doing, in words. */
export function phaseText(job: IJobState): string {
  const steps =
    job.total > 0
      ? `: step ${job.step}/${job.total}` +
        (Number.isFinite(job.loss) && job.step > 0 ? `, loss ${job.loss.toFixed(2)}` : '')
      : '';
  switch (job.phase) {
    case 'starting':
      return 'Starting: collecting the notebooks…';
    case 'train':
      return `Training${steps}`;
    case 'evaluate':
      return 'Evaluating on the held-out cells…';
    case 'judge':
      return 'Measuring executable rates in the Jupyter server…';
    case 'influence':
      return 'Grouping the examples by influence…';
    case 'variants':
      return `Training variants${steps}`;
    case 'publish':
      return 'Publishing…';
    case 'finished':
      return 'Finished.';
    default:
      return job.phase ? `${job.phase}…` : 'Running…';
  }
}

function versionItem(info: IVersionInfo, current: boolean): HTMLElement {
  const item = element('li', 'jp-specgen-personalize-version');
  item.dataset.version = info.version;
  if (current) {
    item.classList.add('jp-mod-current');
  }
  const name = element('span', 'jp-specgen-personalize-version-name');
  name.textContent = info.version;
  item.append(name);
  if (current) {
    const badge = element('span', 'jp-specgen-personalize-current');
    badge.textContent = 'in use';
    item.append(badge);
  }
  const meta = element('span', 'jp-specgen-personalize-version-meta');
  const parts = [formatTime(info.created), `${info.train_examples} example(s)`];
  if (info.metrics) {
    parts.push(
      `exact match ${formatValue(info.metrics.exact_match)}`,
      `edit similarity ${formatValue(info.metrics.edit_similarity)}`,
      `executable ${formatValue(info.metrics.executable_rate)}`
    );
  }
  meta.textContent = parts.join(' · ');
  item.append(meta);
  return item;
}

/** A Unix time in seconds as local date and time ('' for 0). */
function formatTime(seconds: number): string {
  return seconds > 0 ? new Date(seconds * 1000).toLocaleString() : '';
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

function section(
  parent: HTMLElement,
  title: string,
  name: string
): { heading: HTMLElement; body: HTMLElement } {
  const root = element('section', 'jp-specgen-personalize-section');
  root.dataset.section = name;
  const heading = element('div', 'jp-specgen-personalize-heading');
  const h3 = element('h3', '');
  h3.textContent = title;
  heading.append(h3);
  const body = element('div', 'jp-specgen-personalize-body');
  root.append(heading, body);
  parent.append(root);
  return { heading, body };
}

function button(
  label: string,
  testid: string,
  onClick: () => void
): HTMLButtonElement {
  const node = element('button', 'jp-Button jp-specgen-personalize-button');
  node.type = 'button';
  node.textContent = label;
  node.dataset.testid = testid;
  node.addEventListener('click', onClick);
  return node;
}

function list(title: string, entries: string[], testid: string): HTMLElement {
  const root = element('div', 'jp-specgen-personalize-list');
  root.dataset.testid = testid;
  const label = element('span', 'jp-specgen-personalize-list-title');
  label.textContent = `${title} (${entries.length})`;
  root.append(label);
  if (entries.length) {
    const items = element('ul', '');
    for (const entry of entries) {
      const item = element('li', '');
      item.textContent = entry;
      items.append(item);
    }
    root.append(items);
  }
  return root;
}

function errorBox(testid: string): HTMLElement {
  const node = element('div', 'jp-specgen-error');
  node.dataset.testid = testid;
  node.setAttribute('role', 'alert');
  node.hidden = true;
  return node;
}

function showError(node: HTMLElement, reason: unknown): void {
  node.textContent = reason instanceof Error ? reason.message : String(reason);
  node.hidden = false;
}
