// Vitrine's search page: plain ES module, no build step, no third-party code. It talks to the same API as
// everyone else (GET /search, POST /search/image, GET /products/{id}/similar, GET /facets, GET /capabilities)
// and keeps what it shows in the address bar (q, filters, page), so a search can be shared and reloaded.

const PAGE_SIZE = 24;
const DEBOUNCE_MS = 250;
const READY_POLL_MS = 1000;
const FACET_VALUES = 12;

const $ = (id) => document.getElementById(id);
const els = {
  form: $("search-form"), q: $("q"), file: $("image-file"), pick: $("pick-image"), drop: $("drop-zone"),
  queryImage: $("query-image"), queryPreview: $("query-image-preview"), clearImage: $("clear-image"),
  minPrice: $("min-price"), maxPrice: $("max-price"), inStock: $("in-stock"), facets: $("facets"),
  clearFilters: $("clear-filters"), status: $("status"), notice: $("notice"), grid: $("grid"),
  pager: $("pager"), prev: $("prev-page"), next: $("next-page"), pageLabel: $("page-label"),
  showScores: $("show-scores"), template: $("card-template"), panel: $("filters-panel"),
  rerank: $("rerank"), rerankSwitch: $("rerank-switch"), rerankModel: $("rerank-model"),
  dialog: $("variants-dialog"), variantsForm: $("variants-form"), variantsProduct: $("variants-product"),
  variantsSource: $("variants-source"), variantsInstruction: $("variants-instruction"), variantsN: $("variants-n"),
  variantsBackend: $("variants-backend"), variantsBackendLabel: $("variants-backend-label"),
  variantsStatus: $("variants-status"), variantsImages: $("variants-images"), variantsPrompt: $("variants-prompt"),
  variantsGenerate: $("variants-generate"), variantsSearch: $("variants-search"), variantsClose: $("variants-close"),
};

const state = {
  q: "",
  image: null,          // a File or Blob the shopper gave
  imageUrl: null,       // its object URL, for the preview
  filters: {},          // category, brand, min_price, max_price, in_stock, and "tags.<attribute>" keys
  offset: 0,
  similar: null,        // {id, title}: showing products like this one
  rerank: false,        // re-rank the first results with the vision-language model
  variant: null,        // {product, instruction, seed, backend}: the variants panel's last generation
  imagined: null,       // {title, instruction, url, body}: real products like a generated variant
  capabilities: { facets: ["category", "brand"], max_limit: 100, max_upload_bytes: 10_000_000 },
};

let controller = null;   // aborts the request in flight when a newer one starts
let sequence = 0;        // answers to older requests are dropped
let debounceTimer = null;

// ---------------------------------------------------------------- requests

function searchParams() {
  const params = new URLSearchParams();
  params.set("limit", String(PAGE_SIZE));
  params.set("offset", String(state.offset));
  for (const [field, value] of Object.entries(state.filters)) {
    if (value === "" || value === null || value === undefined) continue;
    if (field === "category" || field === "brand" || field === "min_price" || field === "max_price"
        || field === "in_stock") {
      params.set(field, String(value));
    } else {
      params.append("filter", `${field}=${value}`);
    }
  }
  for (const field of state.capabilities.facets) params.append("facet", field);
  if (state.rerank && state.capabilities.rerank) params.set("rerank", "true");
  return params;
}

async function getJson(url, options = {}) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function request(signal) {
  if (state.imagined) return Promise.resolve(state.imagined.body);
  if (state.similar) {
    // the similar endpoint has no offset: ask for the pages up to this one and keep the last
    const limit = Math.min(state.offset + PAGE_SIZE, state.capabilities.max_limit);
    const url = `/products/${encodeURIComponent(state.similar.id)}/similar?limit=${limit}`;
    return getJson(url, { signal }).then((body) => ({
      results: body.results.slice(state.offset), took_ms: body.took_ms, similar: true,
      more: body.results.length === limit && limit < state.capabilities.max_limit,
    }));
  }
  const params = searchParams();
  if (state.image) {
    const form = new FormData();
    form.append("file", state.image, state.image.name || "photo");
    if (state.q) form.append("text", state.q);
    return getJson(`/search/image?${params}`, { method: "POST", body: form, signal });
  }
  params.set("q", state.q);
  return getJson(`/search?${params}`, { signal });
}

// ---------------------------------------------------------------- running a search

function hasQuery() {
  return Boolean(state.q || state.image || state.similar || state.imagined);
}

async function run({ push = false } = {}) {
  saveToAddress(push);
  if (controller) controller.abort();
  clearTimeout(debounceTimer);
  const mine = ++sequence;
  if (!hasQuery()) {
    showWelcome();
    return;
  }
  controller = new AbortController();
  document.body.classList.add("busy");
  els.grid.setAttribute("aria-busy", "true");
  try {
    const body = await request(controller.signal);
    if (mine !== sequence) return;
    render(body);
  } catch (error) {
    if (error.name === "AbortError" || mine !== sequence) return;
    showError(error);
  } finally {
    if (mine === sequence) {
      document.body.classList.remove("busy");
      els.grid.removeAttribute("aria-busy");
    }
  }
}

function searchSoon() {
  clearTimeout(debounceTimer);
  debounceTimer = setTimeout(() => run(), DEBOUNCE_MS);
}

function newSearch({ push = false } = {}) {
  state.offset = 0;
  state.similar = null;
  state.imagined = null;
  run({ push });
}

// ---------------------------------------------------------------- rendering

function render(body) {
  els.grid.replaceChildren(...body.results.map(card));
  const count = body.results.length;
  const first = state.offset + 1;
  const took = `${Math.round(body.took_ms)} ms`;
  if (state.imagined) {
    showImagined();
  } else if (state.similar) {
    showNotice(`Products like “${state.similar.title}”`, "Back to search", () => {
      state.similar = null;
      state.offset = 0;
      run({ push: true });
    });
  } else if (body.no_good_match) {
    showNotice(`Nothing in the catalog matches ${describeQuery()}. Try other words or another photo.`);
  } else if (count === 0 && Object.keys(state.filters).length) {
    showNotice("No results with these filters.", "Clear all filters", clearFilters);
  } else if (count === 0) {
    showNotice(state.offset ? "No more results." : `No results for ${describeQuery()}.`);
  } else {
    hideNotice();
  }
  els.status.textContent = count
    ? `Results ${first}–${state.offset + count}${body.total_candidates ? ` of ${body.total_candidates} candidates`
      : ""} in ${took}${boostText(body)}${rerankText(body)}`
    : `No results (${took})`;
  renderPager(count, body);
  if (state.imagined) els.pager.hidden = true;
  if (!state.similar && body.facets) renderFacets(body.facets);
}

function boostText(body) {
  if (!body.boosts || !body.boosts.length) return "";
  return ` · boosted: ${body.boosts.map((b) => `${b.attribute} ${b.value}`).join(", ")}`;
}

function rerankText(body) {
  if (body.reranked === undefined || body.reranked === null) return "";
  if (body.reranked) return ` · re-ranked by ${body.rerank.model} (top ${body.rerank.top_n})`;
  return ` · not re-ranked: ${body.rerank.reason}`;
}

function describeQuery() {
  if (state.image && state.q) return `your photo with “${state.q}”`;
  if (state.image) return "your photo";
  return `“${state.q}”`;
}

function card(hit) {
  const node = els.template.content.firstElementChild.cloneNode(true);
  const product = hit.product;
  const title = product.title || product.id;
  node.dataset.id = hit.id;
  const img = node.querySelector("img");
  if (product.thumbnail) {
    img.src = product.thumbnail;
    img.alt = title;
  } else {
    img.remove();
    node.querySelector(".thumb").classList.add("no-image");
    node.querySelector(".thumb").setAttribute("aria-label", "No picture");
  }
  node.querySelector(".title").textContent = title;
  node.querySelector(".brand-name").textContent = product.brand || "";
  node.querySelector(".category").textContent = product.category || "";
  node.querySelector(".price").textContent = formatPrice(product.price, product.currency);
  const stock = node.querySelector(".stock");
  if (product.in_stock === true) {
    stock.textContent = "In stock";
    stock.classList.add("in");
  } else if (product.in_stock === false) {
    stock.textContent = "Out of stock";
    stock.classList.add("out");
  }
  if (hit.variants && hit.variants.length) {
    const variants = node.querySelector(".variants");
    variants.hidden = false;
    variants.textContent = `+${hit.variants.length} variant${hit.variants.length > 1 ? "s" : ""}`;
  }
  if (product.generated && product.generated.description) {
    const generated = node.querySelector(".generated");
    generated.hidden = false;
    generated.textContent = product.generated.description;
    generated.title = `Written by ${product.generated.model || "a model"} (vitrine enrich), not by the shop`;
    generated.prepend(Object.assign(document.createElement("span"), { className: "badge", textContent: "AI" }));
  }
  const scores = node.querySelector(".scores");
  const details = scoreDetails(hit);
  for (const [name, value] of details) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    scores.append(dt, dd);
  }
  scores.hidden = !els.showScores.checked || !details.length;
  if (state.capabilities.generate && product.thumbnail) {
    const button = node.querySelector(".variants-button");
    button.hidden = false;
    button.setAttribute("aria-label", `Variants of ${title}`);
    button.addEventListener("click", () => openVariants(hit.id, title, product.thumbnail));
  }
  const more = node.querySelector(".more-like-this");
  more.setAttribute("aria-label", `More like ${title}`);
  more.addEventListener("click", () => {
    state.imagined = null;
    state.similar = { id: hit.id, title };
    state.offset = 0;
    run({ push: true });
    els.grid.focus?.();
  });
  return node;
}

function scoreDetails(hit) {
  const out = [["score", hit.score.toFixed(3)]];
  if (hit.relevance !== undefined && hit.relevance !== null) out.push(["relevance", hit.relevance.toFixed(3)]);
  if (hit.scores) {
    for (const name of ["image", "text", "lexical"]) {
      const value = hit.scores[name];
      if (value !== undefined && value !== null) out.push([name, value.toFixed(3)]);
    }
    if (hit.scores.boost) out.push(["boost", `+${hit.scores.boost.toFixed(2)}`]);
  }
  if (hit.rerank) out.push(["re-rank", `${hit.rerank.vlm.toFixed(2)} → ${hit.rerank.combined.toFixed(3)}`]);
  return out;
}

function formatPrice(price, currency) {
  if (price === undefined || price === null) return "";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "EUR" }).format(price);
  } catch {
    return `${price.toFixed(2)} ${currency || ""}`.trim();
  }
}

function renderPager(count, body) {
  const more = state.similar ? body.more : count === PAGE_SIZE;
  els.pager.hidden = state.offset === 0 && !more;
  els.prev.disabled = state.offset === 0;
  els.next.disabled = !more;
  els.pageLabel.textContent = `Page ${Math.floor(state.offset / PAGE_SIZE) + 1}`;
}

const FACET_LABELS = { category: "Category", brand: "Brand" };

function facetLabel(field) {
  if (FACET_LABELS[field]) return FACET_LABELS[field];
  const name = field.startsWith("tags.") ? field.slice(5) : field;
  return name.charAt(0).toUpperCase() + name.slice(1);
}

function renderFacets(facets) {
  const groups = [];
  for (const field of state.capabilities.facets) {
    const values = (facets[field] || []).slice(0, FACET_VALUES);
    const chosen = state.filters[field];
    if (chosen !== undefined && !values.some((v) => String(v.value) === String(chosen))) {
      values.unshift({ value: chosen, count: null });
    }
    if (!values.length) continue;
    const fieldset = document.createElement("fieldset");
    fieldset.className = "facet";
    fieldset.dataset.field = field;
    const legend = document.createElement("legend");
    legend.textContent = facetLabel(field);
    fieldset.append(legend);
    for (const { value, count } of values) {
      const label = document.createElement("label");
      label.className = "check";
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = String(value);
      input.checked = chosen !== undefined && String(chosen) === String(value);
      input.addEventListener("change", () => {
        if (input.checked) state.filters[field] = String(value);
        else delete state.filters[field];
        newSearch({ push: true });
      });
      const name = document.createElement("span");
      name.textContent = String(value);
      label.append(input, name);
      if (count !== null) {
        const counter = document.createElement("span");
        counter.className = "count";
        counter.textContent = String(count);
        label.append(counter);
      }
      fieldset.append(label);
    }
    groups.push(fieldset);
  }
  els.facets.replaceChildren(...groups);
  els.clearFilters.hidden = !Object.keys(state.filters).length;
}

// ---------------------------------------------------------------- variants (generation)

function openVariants(id, title, thumbnail) {
  state.variant = { id, title, instruction: "", seed: null, backend: null };
  els.variantsProduct.textContent = title;
  els.variantsSource.src = thumbnail;
  els.variantsSource.alt = title;
  els.variantsImages.replaceChildren();
  els.variantsPrompt.hidden = true;
  els.variantsStatus.textContent = "";
  els.variantsSearch.disabled = true;
  els.dialog.showModal();
  els.variantsInstruction.focus();
}

async function generateVariants() {
  const variant = state.variant;
  const instruction = els.variantsInstruction.value.trim();
  if (!variant || !instruction) return;
  const backend = els.variantsBackend.value || null;
  els.variantsGenerate.disabled = true;
  els.variantsSearch.disabled = true;
  els.variantsStatus.textContent = "Generating…";
  try {
    const body = await getJson("/generate/variants", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ product_id: variant.id, instruction, n: Number(els.variantsN.value), backend }),
    });
    Object.assign(variant, { instruction, seed: body.seed, backend });
    els.variantsImages.replaceChildren(...body.images.map((image, i) => {
      const item = document.createElement("li");
      const img = document.createElement("img");
      img.src = image.url;
      img.alt = `Variant ${i + 1} of ${variant.title}: ${instruction}`;
      item.append(img);
      return item;
    }));
    els.variantsPrompt.textContent = `Prompt (${body.prompt_method}): ${body.prompt}`;
    els.variantsPrompt.hidden = false;
    els.variantsStatus.textContent = `${body.images.length} image(s) by ${body.backend} in `
      + `${Math.round(body.took_ms)} ms${body.cached ? " (made before)" : ""}, seed ${body.seed}`;
    els.variantsSearch.disabled = false;
  } catch (error) {
    els.variantsStatus.textContent = error.message;
  } finally {
    els.variantsGenerate.disabled = false;
  }
}

async function searchImagined() {
  const variant = state.variant;
  if (!variant || !variant.instruction) return;
  els.variantsSearch.disabled = true;
  els.variantsStatus.textContent = "Searching the catalog…";
  try {
    const body = await getJson("/search/imagine", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ product_id: variant.id, instruction: variant.instruction, seed: variant.seed,
        backend: variant.backend, limit: PAGE_SIZE }),
    });
    state.imagined = { title: variant.title, instruction: variant.instruction, url: body.variant.images[0].url,
      body: body.search };
    state.similar = null;
    state.offset = 0;
    els.dialog.close();
    run({ push: false });
  } catch (error) {
    els.variantsStatus.textContent = error.message;
    els.variantsSearch.disabled = false;
  }
}

function showImagined() {
  const imagined = state.imagined;
  const box = document.createElement("div");
  box.className = "imagined";
  const img = document.createElement("img");
  img.src = imagined.url;
  img.alt = `Your variant of ${imagined.title}`;
  const text = document.createElement("span");
  text.textContent = `Real products like your variant of “${imagined.title}”: “${imagined.instruction}”`;
  box.append(img, text);
  showNotice("");
  els.notice.replaceChildren(box);
  const back = document.createElement("button");
  back.type = "button";
  back.className = "link-button";
  back.textContent = "Back to search";
  back.addEventListener("click", () => {
    state.imagined = null;
    run();
  });
  els.notice.append(back);
}

function setUpVariants() {
  if (!state.capabilities.generate) return;
  const most = Math.max(1, state.capabilities.max_variants || 1);
  els.variantsN.replaceChildren(...Array.from({ length: Math.min(most, 4) }, (_, i) => new Option(String(i + 1))));
  const backends = state.capabilities.generate_backends || [];
  els.variantsBackend.replaceChildren(...backends.map((name) => new Option(name)));
  els.variantsBackendLabel.hidden = backends.length < 2;
  els.variantsForm.addEventListener("submit", (event) => {
    event.preventDefault();
    generateVariants();
  });
  els.variantsSearch.addEventListener("click", searchImagined);
  els.variantsClose.addEventListener("click", () => els.dialog.close());
}

function showNotice(text, actionLabel = null, action = null) {
  els.notice.classList.remove("error");
  els.notice.replaceChildren(document.createTextNode(text));
  if (actionLabel) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link-button";
    button.textContent = actionLabel;
    button.addEventListener("click", action);
    els.notice.append(" ", button);
  }
  els.notice.hidden = false;
}

function hideNotice() {
  els.notice.hidden = true;
  els.notice.replaceChildren();
}

function showError(error) {
  els.grid.replaceChildren();
  els.pager.hidden = true;
  els.status.textContent = "";
  showNotice(error.status === 503 ? "The search index is loading; try again in a moment." : error.message);
  els.notice.classList.add("error");
}

async function showWelcome() {
  els.grid.replaceChildren();
  els.pager.hidden = true;
  els.status.textContent = "";
  showNotice("Type what you are looking for, or drop a photo anywhere on the page.");
  try {
    const categories = await getJson("/facets?field=category&limit=20");
    if (hasQuery()) return;
    const list = document.createElement("p");
    list.className = "browse";
    list.append("Browse: ");
    for (const { value, count } of categories) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "chip";
      button.textContent = `${value} (${count})`;
      button.addEventListener("click", () => {
        els.q.value = String(value);
        state.q = String(value);
        newSearch({ push: true });
      });
      list.append(button);
    }
    els.notice.append(list);
  } catch {
    // the welcome works without its category list
  }
  els.facets.replaceChildren();
  els.clearFilters.hidden = !Object.keys(state.filters).length;
}

// ---------------------------------------------------------------- the query image

function setImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showNotice(`“${file.name || "That file"}” is not an image: drop a JPEG, PNG, WebP or GIF.`);
    els.notice.classList.add("error");
    return;
  }
  if (file.size > state.capabilities.max_upload_bytes) {
    const mb = (state.capabilities.max_upload_bytes / 1e6).toFixed(0);
    showNotice(`“${file.name || "That image"}” is ${(file.size / 1e6).toFixed(1)} MB; the limit is ${mb} MB.`);
    els.notice.classList.add("error");
    return;
  }
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = file;
  state.imageUrl = URL.createObjectURL(file);
  els.queryPreview.src = state.imageUrl;
  els.queryImage.hidden = false;
  els.q.placeholder = "Refine the photo, e.g. “but in blue”";
  newSearch();
}

function clearImage() {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = null;
  state.imageUrl = null;
  els.queryImage.hidden = true;
  els.queryPreview.removeAttribute("src");
  els.file.value = "";
  els.q.placeholder = "Search products, or drop a photo";
  newSearch();
  els.q.focus();
}

// ---------------------------------------------------------------- filters

function readFilterInputs() {
  const set = (field, value) => {
    if (value === "" || value === false) delete state.filters[field];
    else state.filters[field] = value;
  };
  set("min_price", els.minPrice.value);
  set("max_price", els.maxPrice.value);
  set("in_stock", els.inStock.checked ? "true" : false);
}

function writeFilterInputs() {
  els.minPrice.value = state.filters.min_price ?? "";
  els.maxPrice.value = state.filters.max_price ?? "";
  els.inStock.checked = state.filters.in_stock === "true";
}

function clearFilters() {
  state.filters = {};
  writeFilterInputs();
  newSearch({ push: true });
}

// ---------------------------------------------------------------- the address bar

function saveToAddress(push) {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  for (const [field, value] of Object.entries(state.filters)) params.set(field, value);
  if (state.offset) params.set("offset", String(state.offset));
  if (state.rerank) params.set("rerank", "true");
  if (state.similar) {
    params.set("similar", state.similar.id);
    params.set("similar_title", state.similar.title);
  }
  const query = params.toString();
  const url = query ? `?${query}` : location.pathname;
  if (url === location.search || (!query && !location.search)) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

function loadFromAddress() {
  const params = new URLSearchParams(location.search);
  state.imagined = null;
  state.q = params.get("q") || "";
  state.offset = Math.max(0, Number.parseInt(params.get("offset") || "0", 10) || 0);
  state.filters = {};
  const allowed = new Set(["category", "brand", "min_price", "max_price", "in_stock",
    ...state.capabilities.facets]);
  for (const [field, value] of params) {
    if (allowed.has(field)) state.filters[field] = value;
  }
  state.rerank = params.get("rerank") === "true" && Boolean(state.capabilities.rerank);
  els.rerank.checked = state.rerank;
  const similar = params.get("similar");
  state.similar = similar ? { id: similar, title: params.get("similar_title") || similar } : null;
  els.q.value = state.q;
  writeFilterInputs();
}

// ---------------------------------------------------------------- wiring

function wire() {
  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.q = els.q.value.trim();
    newSearch({ push: true });
  });
  els.q.addEventListener("input", () => {
    state.q = els.q.value.trim();
    state.offset = 0;
    state.similar = null;
    state.imagined = null;
    searchSoon();
  });
  els.pick.addEventListener("click", () => els.file.click());
  els.file.addEventListener("change", () => setImage(els.file.files[0]));
  els.clearImage.addEventListener("click", clearImage);
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
    if (item) {
      event.preventDefault();
      setImage(item.getAsFile());
    }
  });
  document.addEventListener("dragover", (event) => {
    if ([...event.dataTransfer.types].includes("Files")) {
      event.preventDefault();
      document.body.classList.add("dragging");
    }
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    document.body.classList.remove("dragging");
    const file = event.dataTransfer?.files?.[0];
    if (file) {
      event.preventDefault();
      setImage(file);
    }
  });
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
    if (event.key === "/" && !typing) {
      event.preventDefault();
      els.q.focus();
    } else if (event.key === "Escape" && state.image && document.activeElement === els.q && !els.q.value) {
      clearImage();
    }
  });
  for (const input of [els.minPrice, els.maxPrice]) {
    input.addEventListener("change", () => {
      readFilterInputs();
      newSearch({ push: true });
    });
  }
  els.inStock.addEventListener("change", () => {
    readFilterInputs();
    newSearch({ push: true });
  });
  els.clearFilters.addEventListener("click", clearFilters);
  els.rerank.addEventListener("change", () => {
    state.rerank = els.rerank.checked;
    newSearch({ push: true });
  });
  els.showScores.addEventListener("change", () => {
    for (const scores of els.grid.querySelectorAll(".scores")) {
      scores.hidden = !els.showScores.checked || !scores.children.length;
    }
  });
  els.prev.addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    run({ push: true });
    els.grid.scrollIntoView({ block: "start" });
  });
  els.next.addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    run({ push: true });
    els.grid.scrollIntoView({ block: "start" });
  });
  window.addEventListener("popstate", () => {
    loadFromAddress();
    run();
  });
  if (window.matchMedia("(max-width: 700px)").matches) els.panel.open = false;
}

async function waitUntilReady() {
  for (;;) {
    try {
      const response = await fetch("/ready");
      const body = await response.json();
      if (response.ok) return;
      if (body.status === "failed" || body.status === "closed") {
        showNotice(`The search service is not available: ${body.reason || body.status}.`);
        els.notice.classList.add("error");
      } else {
        showNotice("Loading the search index…");
      }
    } catch {
      showNotice("Cannot reach the search service; retrying…");
    }
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
}

async function start() {
  wire();
  await waitUntilReady();
  try {
    state.capabilities = await getJson("/capabilities");
  } catch {
    // keep the defaults: category and brand facets
  }
  // The page sends no API key: features that need one on this server are not offered.
  for (const feature of state.capabilities.keyed || []) state.capabilities[feature] = false;
  if (state.capabilities.rerank) {
    els.rerankSwitch.hidden = false;
    els.rerankModel.textContent = state.capabilities.rerank_model || "the re-ranker";
  }
  setUpVariants();
  loadFromAddress();
  document.body.dataset.ready = "true";
  run();
}

start();
