// owlens report: everything is in the page (no network). One item is drawn at a time (paging), and a
// token's map is decoded only when it is shown, so reports of hundreds of images stay responsive.
(function () {
  "use strict";
  const RUN = JSON.parse(document.getElementById("owlens-data").textContent);
  const state = { item: 0, method: null, token: null };
  const $ = (id) => document.getElementById(id);
  const svgNS = "http://www.w3.org/2000/svg";

  function decode(b64) {
    const raw = atob(b64);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  // The map's value is written into the alpha channel exactly (alpha = round(255 * value)), so what is shown
  // can be read back and checked; colour runs from purple to yellow with the value.
  function drawMap(entry) {
    const canvas = $("map");
    const [h, w] = entry.shape;
    canvas.width = w; canvas.height = h;
    const values = decode(entry.data);
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(w, h);
    for (let i = 0; i < values.length; i++) {
      const v = values[i] / 255;
      image.data[4 * i] = Math.round(255 * Math.min(1, 0.2 + 1.2 * v));
      image.data[4 * i + 1] = Math.round(255 * v * v);
      image.data[4 * i + 2] = Math.round(255 * (1 - v) * 0.6);
      image.data[4 * i + 3] = values[i];
    }
    ctx.putImageData(image, 0, 0);
    canvas.classList.remove("hidden");
    canvas.dataset.token = String(state.token);
    canvas.dataset.method = state.method;
  }

  function box(svg, xyxy, colour, width, label) {
    const [x0, y0, x1, y1] = xyxy;
    const rect = document.createElementNS(svgNS, "rect");
    Object.entries({ x: x0, y: y0, width: x1 - x0, height: y1 - y0, fill: "none", stroke: colour,
      "stroke-width": width, "vector-effect": "non-scaling-stroke" }).forEach(([k, v]) => rect.setAttribute(k, v));
    if (label) { const t = document.createElementNS(svgNS, "title"); t.textContent = label; rect.appendChild(t); }
    svg.appendChild(rect);
  }

  function drawBoxes(list, colour, scale) {
    const svg = $("boxes");
    svg.replaceChildren();
    list.forEach((b) => box(svg, b.xyxy, colour, scale(b), b.label));
  }

  function showToken(index) {
    const item = RUN.items[state.item];
    const entry = (item.maps[state.method] || {})[index];
    state.token = index;
    document.querySelectorAll(".token").forEach((el) => el.classList.toggle("active", Number(el.dataset.index) === index));
    if (!entry) { $("map").classList.add("hidden"); $("boxes").replaceChildren(); showObjects([], ""); $("info").textContent = "no map for this token"; return; }
    drawMap(entry);
    showObjects(entry.objects || [], item.answer.tokens[index].token);
    // Top boxes drawn with line width by class weight, as the paper draws GA's explanation.
    drawBoxes(entry.boxes, "#ffd166", (b) => 0.5 + 3.5 * b.weight);
    $("info").textContent = `token “${item.answer.tokens[index].token}” · ${state.method} · query “${entry.query}”`;
  }

  // An object-level explanation lists the objects the token rests on, under the map (text only: escaped by the DOM).
  function showObjects(objects, token) {
    const list = $("objects");
    list.replaceChildren();
    list.hidden = objects.length === 0;
    objects.forEach((o) => {
      const li = document.createElement("li");
      li.textContent = `“${token}” ${o.text}`;
      li.addEventListener("mouseenter", () => drawBoxes([{ xyxy: o.xyxy, label: o.text }], "#2a9d8f", () => 2.5));
      li.addEventListener("mouseleave", () => state.token !== null && showToken(state.token));
      list.appendChild(li);
    });
  }

  function renderTokens(item) {
    const holder = $("tokens");
    holder.replaceChildren();
    item.answer.tokens.forEach((t) => {
      const el = document.createElement("button");
      el.className = "token";
      el.textContent = t.token;
      el.dataset.index = t.index;
      const mapped = Object.values(item.maps).some((m) => m[t.index]);
      if (mapped) { el.classList.add("has-map"); el.addEventListener("click", () => showToken(t.index)); }
      else el.disabled = true;
      holder.appendChild(el);
    });
  }

  function renderMethods(item) {
    const select = $("method");
    select.replaceChildren();
    Object.keys(item.maps).forEach((m) => { const o = document.createElement("option"); o.value = o.textContent = m; select.appendChild(o); });
    state.method = Object.keys(item.maps)[0] || null;
    select.value = state.method;
  }

  function renderHallucination(item) {
    const body = $("hallucination-rows");
    body.replaceChildren();
    const objects = (item.hallucination && item.hallucination.objects) || [];
    $("hallucination").hidden = !item.hallucination;
    const h = item.hallucination || {};
    // Which τ judged the verdicts: a model's calibrated one, one the user gave, or the uncalibrated 0.5.
    const how = h.threshold_source === "uncalibrated"
      ? "uncalibrated: this model has no calibration.json, run owlens calibrate" : String(h.threshold_source || "given");
    $("hallucination-threshold").textContent = typeof h.threshold !== "number" ? ""
      : h.combined ? `verdicts from both branches: the calibrated flag on p_c and the MLLM's own P(yes) (τ on p_c alone: ${h.threshold.toFixed(3)}; ${how})`
      : `grounded ⇔ p_c > ${h.threshold.toFixed(3)} (${how})`;
    objects.forEach((o) => {
      const row = document.createElement("tr");
      row.className = o.grounded ? "grounded" : "ungrounded";
      [o.name, o.grounded ? "grounded" : "ungrounded", o.presence.toFixed(3)].forEach((text) => {
        const cell = document.createElement("td"); cell.textContent = text; row.appendChild(cell);
      });
      row.addEventListener("mouseenter", () => drawBoxes([{ xyxy: o.box_xyxy_px, label: o.name }], o.grounded ? "#2a9d8f" : "#d1495b", () => 2.5));
      row.addEventListener("mouseleave", () => state.token !== null && showToken(state.token));
      body.appendChild(row);
    });
  }

  function renderItem(index) {
    state.item = index;
    const item = RUN.items[index];
    $("pageinfo").textContent = `${index + 1} / ${RUN.items.length}`;
    $("image").src = item.image;
    const [w, h] = item.size;
    $("stage").style.setProperty("--aspect", `${w} / ${h}`);
    $("boxes").setAttribute("viewBox", `0 0 ${w} ${h}`);
    $("answer-prompt").textContent = item.answer.prompt;
    $("detections").textContent = item.detections.map((d) => `${d.query} ${d.score.toFixed(2)}`).join(" · ") || "none";
    renderMethods(item);
    renderTokens(item);
    renderHallucination(item);
    const first = item.answer.tokens.find((t) => Object.values(item.maps).some((m) => m[t.index]));
    if (first) showToken(first.index); else { state.token = null; $("map").classList.add("hidden"); }
  }

  $("method").addEventListener("change", (e) => { state.method = e.target.value; if (state.token !== null) showToken(state.token); });
  $("prev").addEventListener("click", () => renderItem((state.item - 1 + RUN.items.length) % RUN.items.length));
  $("next").addEventListener("click", () => renderItem((state.item + 1) % RUN.items.length));
  window.owlens = { state, showToken, renderItem };
  // A run without images (a bias run, an evaluation) shows its figures only.
  if (RUN.items.length) renderItem(0);
  else {
    ["viewer", "answer", "hallucination"].forEach((id) => { $(id).hidden = true; });
    $("prev").parentElement.hidden = true;
  }
})();
