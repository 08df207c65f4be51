// One time-series chart: a thin Preact wrapper around uPlot (vendor/), which does all the drawing.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import { html } from "./ui.js";

const HEIGHT = 150;
const MIN_SPAN_S = 300;

// uPlot needs two points to size its time axis: an empty chart gets the last five minutes, blank.
function drawable(xs, ys) {
  if (xs.length >= 2) return [xs, ys];
  const now = Date.now() / 1000;
  return xs.length === 1 ? [[xs[0] - MIN_SPAN_S, xs[0]], [null, ys[0]]] : [[now - MIN_SPAN_S, now], [null, null]];
}

// At least five minutes wide, ending now-ish: with no or one sample uPlot would otherwise span years.
function xRange(u, min, max) {
  const end = max ?? Date.now() / 1000;
  return [Math.min(min ?? end, end - MIN_SPAN_S), end];
}

export function TimeChart({ title, xs, ys, unit, color, testid }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const width = Math.max(200, box.current.clientWidth);
    plot.current = new uPlot({
      width,
      height: HEIGHT,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true, range: xRange }, y: { range: (u, min, max) => [0, Math.max(max || 0, unit === "%" ? 5 : 1) * 1.1] } },
      axes: [
        { stroke: "#6b7785", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e3e7ed" }, font: "11px system-ui" },
        { stroke: "#6b7785", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e3e7ed" }, font: "11px system-ui", size: 48,
          values: (u, vals) => vals.map((v) => (v >= 1000 ? `${(v / 1000).toFixed(1)}k` : `${+v.toFixed(2)}`)) },
      ],
      series: [{}, { label: title, stroke: color, width: 2, fill: `${color}22`, points: { show: false }, spanGaps: false }],
    }, drawable(xs, ys), box.current);
    const resize = new ResizeObserver(() => {
      if (plot.current && box.current) plot.current.setSize({ width: Math.max(200, box.current.clientWidth), height: HEIGHT });
    });
    resize.observe(box.current);
    return () => {
      resize.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, []);
  useEffect(() => {
    if (plot.current) plot.current.setData(drawable(xs, ys));
  }, [xs, ys]);
  const lastValue = ys.length ? ys[ys.length - 1] : null;
  return html`<div class="chart" data-testid=${testid}>
    <div class="chart-head"><span>${title}</span>
      <strong>${lastValue === null || lastValue === undefined ? "–" : `${+lastValue.toFixed(2)} ${unit}`}</strong></div>
    <div ref=${box} class="chart-box"></div>
  </div>`;
}
