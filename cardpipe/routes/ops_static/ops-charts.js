// Small line charts drawn as inline SVG: one line per label, gaps where a minute has no sample.
// Every path carries its values (data-values), so what is drawn can be checked against the API.
"use strict";
window.OpsCharts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 320, HEIGHT = 130, LEFT = 34, RIGHT = 6, TOP = 8, BOTTOM = 18;
  const COLORS = ["#0b57d0", "#d93025", "#188038", "#e37400", "#9334e6", "#007b83", "#c5221f", "#5f6368"];

  function svg(name, attrs = {}) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, value);
    return element;
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * magnitude) return step * magnitude;
    return 10 * magnitude;
  }

  function formatNumber(value) {
    if (value === null || value === undefined) return "–";
    return Math.abs(value) >= 100 || Number.isInteger(value) ? String(Math.round(value)) : value.toFixed(1);
  }

  function clock(epochSeconds) {
    const date = new Date(epochSeconds * 1000);
    return `${String(date.getHours()).padStart(2, "0")}:${String(date.getMinutes()).padStart(2, "0")}`;
  }

  // columns: label -> values (one per minute, null for none); labelText: label -> shown name.
  function draw(figure, minutes, columns, { scale = 1, labelText = (l) => l, emptyText = "" } = {}) {
    figure.querySelectorAll("svg, ul.legend, p.empty").forEach((old) => old.remove());
    const labels = Object.keys(columns);
    if (!labels.length) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = emptyText;
      figure.append(empty);
      return;
    }
    const scaled = Object.fromEntries(labels.map((label) => [label,
      columns[label].map((v) => (v === null ? null : v / scale))]));
    const all = Object.values(scaled).flat().filter((v) => v !== null);
    const top = niceMax(Math.max(0, ...all));
    const bottom = Math.min(0, ...all);
    const plotW = WIDTH - LEFT - RIGHT, plotH = HEIGHT - TOP - BOTTOM;
    const x = (i) => LEFT + (minutes.length > 1 ? (i * plotW) / (minutes.length - 1) : plotW);
    const y = (v) => TOP + plotH - ((v - bottom) * plotH) / (top - bottom || 1);

    const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "data-minutes": JSON.stringify(minutes) });
    for (const fraction of [0, 0.5, 1]) {
      const value = bottom + (top - bottom) * fraction;
      chart.append(svg("line", { class: fraction ? "grid" : "axis", x1: LEFT, x2: WIDTH - RIGHT, y1: y(value), y2: y(value) }));
      const text = svg("text", { x: LEFT - 4, y: y(value) + 3, "text-anchor": "end" });
      text.textContent = formatNumber(value);
      chart.append(text);
    }
    for (const [i, anchor] of [[0, "start"], [minutes.length - 1, "end"]]) {
      const text = svg("text", { x: x(i), y: HEIGHT - 4, "text-anchor": anchor });
      text.textContent = clock(minutes[i]);
      chart.append(text);
    }
    const legend = document.createElement("ul");
    legend.className = "legend";
    labels.forEach((label, index) => {
      const color = COLORS[index % COLORS.length];
      const values = columns[label];
      let d = "";
      let pen = false;
      scaled[label].forEach((v, i) => {
        if (v === null) { pen = false; return; }
        d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      // A lone point (no neighbour to join) is drawn as a dot.
      const path = svg("path", { class: "line", d: d || "M0,0", stroke: color, "data-label": label,
        "data-values": JSON.stringify(values) });
      chart.append(path);
      scaled[label].forEach((v, i) => {
        const alone = v !== null && scaled[label][i - 1] == null && scaled[label][i + 1] == null;
        if (alone) chart.append(svg("circle", { cx: x(i), cy: y(v), r: 2, fill: color }));
      });
      const known = values.filter((v) => v !== null);
      const item = document.createElement("li");
      item.dataset.label = label;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color;
      const last = document.createElement("span");
      last.className = "last";
      last.textContent = formatNumber(known.length ? known[known.length - 1] / scale : null);
      item.append(swatch, document.createTextNode(labelText(label)), last);
      legend.append(item);
    });
    figure.append(chart, legend);
  }

  return { draw, formatNumber };
})();
