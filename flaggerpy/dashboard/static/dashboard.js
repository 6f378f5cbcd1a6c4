// The dashboard's only script: the list page reloads itself, a canary's page polls its
// timeline (JSON) and draws it with uPlot 1.6.32 (npm `uplot`, dist/uPlot.iife.min.js and
// dist/uPlot.min.css, vendored beside this file with its MIT license, uPlot.LICENSE).
(function () {
  "use strict";
  var list = document.getElementById("list");
  if (list) {
    var every = Number(list.dataset.refresh || 0);
    if (every > 0) { setTimeout(function () { location.reload(); }, every * 1000); }
    return;
  }
  var box = document.getElementById("charts");
  if (!box || typeof uPlot === "undefined") { return; }
  var weightChart = null, metricChart = null, metricNames = "";
  var colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"];

  // One point alone would stretch the time axis over years: give it a minute around it.
  var time = { time: true, range: function (u, min, max) {
    return min === max ? [min - 30, max + 30] : [min, max];
  } };

  function width() { return Math.max(400, Math.min(1000, box.clientWidth || 800)); }

  // Series given as [[t, v], ...] each, on one time axis: the union of their times.
  function align(series) {
    var times = {};
    series.forEach(function (points) { points.forEach(function (p) { times[p[0]] = true; }); });
    var xs = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
    var data = [xs];
    series.forEach(function (points) {
      var at = {};
      points.forEach(function (p) { at[p[0]] = p[1]; });
      data.push(xs.map(function (x) { return x in at ? at[x] : null; }));
    });
    return data;
  }

  function draw(timeline) {
    var weights = align([timeline.weights]);
    if (!weightChart) {
      weightChart = new uPlot({
        title: "Canary weight (%)", width: width(), height: 220,
        scales: { x: time, y: { range: [0, 100] } },
        series: [{}, { label: "weight", stroke: "#f0a030", width: 2, spanGaps: true,
                       paths: uPlot.paths.stepped({ align: 1 }) }],
      }, weights, document.getElementById("weight-chart"));
    } else {
      weightChart.setData(weights);
    }
    var names = Object.keys(timeline.metrics).sort();
    var metrics = align(names.map(function (n) { return timeline.metrics[n]; }));
    if (names.join("\n") !== metricNames) {
      if (metricChart) { metricChart.destroy(); metricChart = null; }
      metricNames = names.join("\n");
    }
    if (names.length && !metricChart) {
      metricChart = new uPlot({
        title: "Checks (value per analysis)", width: width(), height: 220,
        scales: { x: time },
        series: [{}].concat(names.map(function (n, i) {
          return { label: n, stroke: colours[i % colours.length], width: 2, spanGaps: true,
                   points: { show: true } };
        })),
      }, metrics, document.getElementById("metric-chart"));
    } else if (metricChart) {
      metricChart.setData(metrics);
    }
    var count = timeline.weights.length;
    names.forEach(function (n) { count += timeline.metrics[n].length; });
    box.dataset.points = String(count);
    // The summary, checks and conditions, rendered by the server from the same canary.
    ["summary", "details"].forEach(function (part) {
      var into = document.getElementById(part === "summary" ? "summary-box" : "details");
      if (into && typeof timeline[part] === "string") { into.innerHTML = timeline[part]; }
    });
  }

  function poll() {
    var url = box.dataset.url + (box.dataset.since ?
      "?since=" + encodeURIComponent(box.dataset.since) : "");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(draw)
      .catch(function (e) { box.dataset.error = String(e); });
  }
  poll();
  var every = Number(box.dataset.refresh || 0);
  if (every > 0) { setInterval(poll, every * 1000); }
})();
