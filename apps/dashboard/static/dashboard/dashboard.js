// The dashboard refreshes itself: every 2 s it fetches its JSON document and updates the
// uploads table, the files being received, the rejected-rows-by-code table, the throughput
// chart, the live records' figures and batches table, the tenant's validation rules and,
// for staff, the tenants' summary in place; a tenant's sales card (revenue per day and top
// products, one currency at a time) every SALES_EVERY-th time, as its figures are read
// from every order of the range.
// Every value arrives formatted; this script only places it. No build step, no library.
(function () {
  "use strict";

  const root = document.getElementById("dashboard");
  if (!root) return;
  const INTERVAL_MS = 2000;
  const SALES_EVERY = 15;
  let polls = 0;
  let sales = null;
  const SVG = "http://www.w3.org/2000/svg";

  function fillCells(row, item) {
    if (item.state !== undefined) row.dataset.state = item.state;
    for (const cell of row.querySelectorAll("[data-cell]")) {
      const text = item.cells[cell.dataset.cell] || "";
      if (cell.textContent !== text) cell.textContent = text;
    }
    const errors = row.querySelector("[data-link=errors]");
    if (errors) errors.href = item.errors_url;
  }

  function fillUpload(row, upload) {
    row.dataset.uploadId = upload.id;
    fillCells(row, upload);
    row.querySelector("[data-link=detail]").href = upload.url;
    row.querySelector("progress").value = upload.percent;
    row.querySelector(".rate").hidden = !upload.cells.rows_per_second;
    const warnings = row.querySelector("[data-link=warnings]");
    warnings.href = upload.warnings_url;
    warnings.hidden = !upload.rows.warned;
  }

  function fillBatch(row, batch) {
    row.dataset.batchId = batch.id;
    fillCells(row, batch);
  }

  function fillSession(row, session) {
    row.dataset.sessionId = session.id;
    fillCells(row, session);
    row.querySelector("progress").value = session.percent;
  }

  function fillTenant(row, tenant) {
    row.dataset.tenantId = tenant.id;
    fillCells(row, tenant);
    row.querySelector("[data-link=tenant]").href = tenant.url;
  }

  // Rows keyed by `data-<key>`: kept (and updated in place), added or removed so the table
  // shows `items` in their order.
  function renderRows(bodyId, templateId, emptyId, key, items, fill) {
    const body = document.getElementById(bodyId);
    const template = document.getElementById(templateId);
    const existing = new Map();
    for (const row of body.querySelectorAll("tr")) existing.set(row.dataset[key], row);
    let previous = null;
    for (const item of items) {
      const id = String(item.id);
      let row = existing.get(id);
      existing.delete(id);
      if (!row) row = template.content.firstElementChild.cloneNode(true);
      fill(row, item);
      const expected = previous ? previous.nextElementSibling : body.firstElementChild;
      if (row !== expected) body.insertBefore(row, expected);
      previous = row;
    }
    for (const row of existing.values()) row.remove();
    document.getElementById(emptyId).hidden = items.length > 0;
  }

  function renderLive(live) {
    for (const figure of document.querySelectorAll("#live-figures [data-live]")) {
      const text = live.cells[figure.dataset.live] || "";
      if (figure.textContent !== text) figure.textContent = text;
    }
  }

  // One row per record type, always all of them: only their texts change. An open schema
  // stays open (its text is replaced only when it changed).
  function renderRules(rules) {
    if (!rules) return;  // every tenant's page: no rules card
    for (const item of rules) {
      const row = document.querySelector(`#rules tr[data-rules="${item.type}"]`);
      if (!row) continue;
      for (const cell of row.querySelectorAll("[data-cell]")) {
        const text = item.cells[cell.dataset.cell] || "";
        if (cell.textContent !== text) cell.textContent = text;
      }
      row.querySelector("details").hidden = !item.current;
    }
  }

  function renderCodes(codes) {
    const body = document.getElementById("reject-codes");
    const rows = codes.map(function (c) {
      const tr = document.createElement("tr");
      const code = document.createElement("td");
      const link = document.createElement("a");
      const tag = document.createElement("code");
      link.href = c.url;
      tag.textContent = c.code;
      link.appendChild(tag);
      code.appendChild(link);
      const count = document.createElement("td");
      count.className = "num";
      count.textContent = c.label;
      tr.append(code, count);
      return tr;
    });
    body.replaceChildren(...rows);
    document.getElementById("no-rejects").hidden = codes.length > 0;
  }

  function svg(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function renderChart(series) {
    const start = Date.parse(series.start);
    drawBars(document.getElementById("throughput-chart"), series.rows_per_second, function (i, fmt) {
      const at = new Date(start + i * series.bucket_seconds * 1000).toISOString().slice(11, 16);
      return at + " UTC: " + fmt.format(series.rows_per_second[i]) + " rows/s";
    }, series.start_label, series.end_label, "no rows processed in this window yet", series.ticks);
    document.getElementById("throughput-caption").textContent = series.caption;
  }

  // Bars for `values` (one a slot), a y axis from 0 to a round maximum, and a title for
  // each bar (`titleOf(i, fmt)`, `fmt` the axis's number format); under them the two ends'
  // labels and, when given, `ticks` ({at: a fraction of the width, label}) at round times.
  // `empty` is written across a chart without any value above 0.
  function drawBars(chart, values, titleOf, startLabel, endLabel, empty, ticks) {
    const width = 600, height = ticks ? 190 : 180, left = 56, right = 8, top = 10;
    const bottom = ticks ? 32 : 22;
    const plotW = width - left - right, plotH = height - top - bottom;
    const max = niceMax(Math.max(0, ...values));
    const fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: max < 10 ? 1 : 0 });
    const nodes = [];
    if (!values.some(function (value) { return value > 0; })) {
      nodes.push(svg("text", { x: left + plotW / 2, y: top + plotH / 2, class: "axis",
        "text-anchor": "middle" }, empty));
    }
    for (const fraction of [0, 0.5, 1]) {
      const y = top + plotH * (1 - fraction);
      nodes.push(svg("line", { x1: left, x2: width - right, y1: y, y2: y, class: "rule" }));
      nodes.push(svg("text", { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end" },
        fmt.format(max * fraction)));
    }
    const slot = plotW / Math.max(1, values.length);
    values.forEach(function (value, i) {
      if (value <= 0) return;
      const h = Math.max(1, plotH * value / max);
      const bar = svg("rect", {
        x: left + i * slot + slot * 0.1, y: top + plotH - h,
        width: Math.max(1, slot * 0.8), height: h, class: "bar",
      });
      bar.appendChild(svg("title", {}, titleOf(i, fmt)));
      nodes.push(bar);
    });
    // round times between the two ends, each with its tick; the ends carry their dates
    for (const tick of ticks || []) {
      const x = left + plotW * tick.at;
      nodes.push(svg("line", { x1: x, x2: x, y1: top + plotH, y2: top + plotH + 4, class: "tick" }));
      if (tick.at > 0.12 && tick.at < 0.88) {
        nodes.push(svg("text", { x: x, y: top + plotH + 14, class: "axis", "text-anchor": "middle" },
          tick.label));
      }
    }
    const labelY = height - (ticks ? 2 : 6);
    nodes.push(svg("text", { x: left, y: labelY, class: "axis" }, startLabel));
    nodes.push(svg("text", { x: width - right, y: labelY, class: "axis", "text-anchor": "end" },
      endLabel));
    chart.replaceChildren(...nodes);
  }

  // One row a product: its name, a bar as long as its share of the first one's revenue,
  // and the exact revenue and units sold.
  function drawRanking(chart, products, code) {
    const width = 600, labelW = 200, valueW = 150, rowH = 34, top = 8;
    const max = Math.max(0, ...products.map(function (p) { return Number(p.revenue); }));
    const nodes = [];
    if (!products.length) {
      nodes.push(svg("text", { x: width / 2, y: 90, class: "axis", "text-anchor": "middle" },
        code ? "no products sold in " + code : "no orders yet"));
    }
    products.forEach(function (p, i) {
      const y = top + i * rowH;
      const w = max > 0 ? Math.max(1, (width - labelW - valueW) * Number(p.revenue) / max) : 1;
      const label = svg("text", { x: labelW - 8, y: y + 17, class: "axis", "text-anchor": "end" },
        p.label.length > 28 ? p.label.slice(0, 27) + "…" : p.label);
      const bar = svg("rect", { x: labelW, y: y + 4, width: w, height: rowH - 12, class: "bar" });
      bar.appendChild(svg("title", {}, p.label + ": " + p.revenue + " " + code));
      nodes.push(label, bar, svg("text", { x: labelW + w + 6, y: y + 17, class: "axis" },
        p.revenue + " " + code + " · " + p.units + " units"));
    });
    chart.replaceChildren(...nodes);
  }

  function drawSales() {
    const select = document.getElementById("sales-currency");
    if (!sales || !select) return;
    const code = select.value;
    const days = sales.days;
    const values = days.map(function (d) { return Number(d.revenue[code] || 0); });
    drawBars(document.getElementById("revenue-chart"), values, function (i) {
      return days[i].date + ": " + (days[i].revenue[code] || "0.00") + " " + code;
    }, days.length ? days[0].date : "", days.length ? days[days.length - 1].date : "",
    code ? "no revenue in " + code + " in these days" : "no orders yet");
    drawRanking(document.getElementById("products-chart"), sales.products[code] || [], code);
    for (const node of document.querySelectorAll("[data-sales=currency]")) {
      node.textContent = code;
    }
    document.getElementById("sales-caption").textContent = sales.caption;
  }

  // The currency chosen stays chosen while it is still among the tenant's currencies.
  function renderSales(data) {
    const select = document.getElementById("sales-currency");
    if (!data || !select) return;
    sales = data;
    const chosen = select.value;
    const codes = Array.from(select.options, function (o) { return o.value; });
    if (codes.join() !== data.currencies.join()) {
      select.replaceChildren(...data.currencies.map(function (code) {
        const option = document.createElement("option");
        option.value = option.textContent = code;
        return option;
      }));
      if (data.currencies.includes(chosen)) select.value = chosen;
    }
    drawSales();
  }

  function render(data) {
    renderRows("uploads", "upload-row", "no-uploads", "uploadId", data.uploads, fillUpload);
    renderRows("batches", "batch-row", "no-batches", "batchId", data.batches, fillBatch);
    renderRows("receiving", "session-row", "no-receiving", "sessionId", data.receiving,
      fillSession);
    document.getElementById("receiving-card").hidden = data.receiving.length === 0;
    if (data.tenants && document.getElementById("tenant-rows")) {
      renderRows("tenant-rows", "tenant-row", "no-tenants", "tenantId", data.tenants, fillTenant);
    }
    renderLive(data.live);
    renderRules(data.rules);
    renderCodes(data.reject_codes);
    renderChart(data.throughput);
    renderSales(data.sales);
    document.getElementById("live").textContent = "Updated " + data.generated_at + " UTC";
    document.getElementById("live").classList.remove("stale");
  }

  async function refresh() {
    if (!document.hidden) {
      try {
        polls += 1;
        const withSales = polls % SALES_EVERY === 0 ? "&sales=1" : "";
        const response = await fetch(root.dataset.source + withSales, {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
          cache: "no-store",
        });
        if (response.status === 401) {
          window.location.assign(root.dataset.login);
          return;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        render(await response.json());
      } catch (error) {
        const live = document.getElementById("live");
        live.textContent = "Not updating (" + error.message + "); retrying";
        live.classList.add("stale");
      }
    }
    window.setTimeout(refresh, INTERVAL_MS);
  }

  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", function () { select.form.submit(); });
  }
  const currency = document.getElementById("sales-currency");
  if (currency) currency.addEventListener("change", drawSales);
  render(JSON.parse(document.getElementById("dashboard-initial").textContent));
  window.setTimeout(refresh, INTERVAL_MS);
})();
