// The before/after chart of a personalize job: grouped bars (before, after) for exact match, edit
// similarity and executable rate, each in [0, 1]. Pure: metrics in, a detached <svg> out; colours
// come from CSS (style/base.css) so the chart follows the JupyterLab theme.

import { IEvalMetrics } from '../protocol';

const SVG_NS = 'http://www.w3.org/2000/svg';

/** The metrics the chart shows, in order, with their axis labels. */
export const PLOT_METRICS: ReadonlyArray<{
  key: 'exact_match' | 'edit_similarity' | 'executable_rate';
  label: string;
}> = [
  { key: 'exact_match', label: 'exact match' },
  { key: 'edit_similarity', label: 'edit similarity' },
  { key: 'executable_rate', label: 'executable rate' }
];

/**
 * Build the chart. `null` metrics (or a null value, e.g. an executable rate that was not
 * measured) draw no bar and the label "n/a".
 */
export function buildPlot(options: IPlotOptions): SVGSVGElement {
  const { before, after, beforeLabel, afterLabel } = options;
  const svg = element('svg', {
    class: 'jp-specgen-plot',
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    width: String(WIDTH),
    height: String(HEIGHT),
    role: 'img',
    'data-testid': 'specgen-plot'
  });
  const series = [
    { name: 'before', label: beforeLabel, metrics: before },
    { name: 'after', label: afterLabel, metrics: after }
  ];

  // The accessible name: every number, in words, for readers that do not see the bars.
  const title = element('title', {});
  title.textContent =
    `${beforeLabel} vs ${afterLabel} on held-out cells: ` +
    PLOT_METRICS.map(
      ({ key, label }) =>
        `${label} ${formatValue(before?.[key])} → ${formatValue(after?.[key])}`
    ).join(', ');
  svg.appendChild(title);

  // Axis and grid lines at 0, 0.5 and 1.
  for (const tick of [0, 0.5, 1]) {
    const y = yOf(tick);
    svg.appendChild(
      element('line', {
        class: tick === 0 ? 'jp-specgen-plot-axis' : 'jp-specgen-plot-grid',
        x1: String(LEFT),
        x2: String(WIDTH - RIGHT),
        y1: String(y),
        y2: String(y)
      })
    );
    svg.appendChild(
      text(String(tick), LEFT - 6, y + 4, 'jp-specgen-plot-tick', 'end')
    );
  }

  const groupWidth = (WIDTH - LEFT - RIGHT) / PLOT_METRICS.length;
  PLOT_METRICS.forEach(({ key, label }, group) => {
    const groupX = LEFT + group * groupWidth;
    const barsX = groupX + (groupWidth - 2 * BAR_WIDTH - BAR_GAP) / 2;
    series.forEach(({ name, label: seriesLabel, metrics }, index) => {
      const value = metrics?.[key] ?? null;
      const x = barsX + index * (BAR_WIDTH + BAR_GAP);
      if (value !== null) {
        const clamped = Math.min(1, Math.max(0, value));
        const bar = element('rect', {
          class: `jp-specgen-plot-bar jp-specgen-plot-bar-${name}`,
          x: String(x),
          y: String(yOf(clamped)),
          width: String(BAR_WIDTH),
          height: String(yOf(0) - yOf(clamped)),
          'data-metric': key,
          'data-series': name
        });
        const tip = element('title', {});
        tip.textContent = `${label}, ${seriesLabel}: ${formatValue(value)}`;
        bar.appendChild(tip);
        svg.appendChild(bar);
      }
      const labelY = value === null ? yOf(0) - 4 : yOf(Math.min(1, Math.max(0, value))) - 4;
      svg.appendChild(
        text(
          formatValue(value),
          x + BAR_WIDTH / 2,
          labelY,
          'jp-specgen-plot-value',
          'middle'
        )
      );
    });
    svg.appendChild(
      text(
        label,
        groupX + groupWidth / 2,
        yOf(0) + 16,
        'jp-specgen-plot-label',
        'middle'
      )
    );
  });

  // Legend, top left, each entry as wide as its label (labels such as "before (v12)" vary).
  let x = LEFT;
  series.forEach(({ name, label }) => {
    svg.appendChild(
      element('rect', {
        class: `jp-specgen-plot-swatch jp-specgen-plot-bar-${name}`,
        x: String(x),
        y: '4',
        width: '10',
        height: '10'
      })
    );
    svg.appendChild(text(label, x + 14, 13, 'jp-specgen-plot-legend', 'start'));
    x += 14 + label.length * LEGEND_CHAR_WIDTH + 16;
  });
  return svg;
}

export interface IPlotOptions {
  /** Metrics of the adapter in service before the job (null: not measured). */
  before: IEvalMetrics | null;
  /** Metrics of the newly trained adapter. */
  after: IEvalMetrics | null;
  /** What "before" was: "base" (the model alone) or a version such as "v2". */
  beforeLabel: string;
  /** What "after" is, e.g. "v3" or "new". */
  afterLabel: string;
}

/** Two decimals, or "n/a" for a metric that was not measured. */
export function formatValue(value: number | null | undefined): string {
  return value === null || value === undefined || Number.isNaN(value)
    ? 'n/a'
    : value.toFixed(2);
}

const WIDTH = 420;
const HEIGHT = 210;
const LEFT = 34; // room for the tick labels
const RIGHT = 8;
const TOP = 34; // room for the legend and the value above a full bar
const BOTTOM = 26; // room for the metric names
const BAR_WIDTH = 36;
const BAR_GAP = 6;
const LEGEND_CHAR_WIDTH = 6.5; // an upper bound of a character's width at the legend's font size

function yOf(value: number): number {
  return TOP + (1 - value) * (HEIGHT - TOP - BOTTOM);
}

function element<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attributes: Record<string, string>
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  return node;
}

function text(
  content: string,
  x: number,
  y: number,
  className: string,
  anchor: 'start' | 'middle' | 'end'
): SVGTextElement {
  const node = element('text', {
    class: className,
    x: String(x),
    y: String(y),
    'text-anchor': anchor
  });
  node.textContent = content;
  return node;
}
