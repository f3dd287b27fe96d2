// catdog page: pick, drop or paste images; each becomes a card answered by POST /v1/predict.
"use strict";

const MAX_IN_FLIGHT = 4; // the server batches concurrent requests; a few at once keeps the page snappy
const state = { info: null, queue: [], inFlight: 0, done: 0, total: 0 };
const $ = (selector, root = document) => root.querySelector(selector);

function authHeaders() {
  const key = $("#api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function loadInfo() {
  try {
    const response = await fetch("/v1/info");
    state.info = await response.json();
    const { model, image_size: size, version, runtime, auth } = state.info;
    $("#model-info").textContent = `${model} · ${size}px · ${runtime} · catdog ${version}`;
    $("#key-form").hidden = !auth;
    const saved = sessionStorage.getItem("catdog-key");
    if (saved) $("#api-key").value = saved;
  } catch (error) {
    $("#model-info").textContent = "Server unreachable";
  }
}

function addFiles(files) {
  const images = [...files].filter((file) => file.type.startsWith("image/") || !file.type);
  if (!images.length) return;
  $("#toolbar").hidden = false;
  const batch = document.createDocumentFragment(); // newest batch on top, in the order given
  for (const file of images) {
    const card = makeCard(file);
    batch.append(card);
    state.queue.push({ file, card });
    state.total += 1;
  }
  $("#cards").prepend(batch);
  updateSummary();
  pump();
}

function makeCard(file) {
  const card = $("#card-template").content.firstElementChild.cloneNode(true);
  const img = $("img", card);
  img.addEventListener("error", () => img.parentElement.classList.add("no-preview"));
  img.addEventListener("load", () => img.parentElement.classList.remove("no-preview"));
  img.src = URL.createObjectURL(file);
  img.alt = file.name || "pasted image";
  card.dataset.original = img.src;
  $(".name", card).textContent = file.name || "pasted image";
  $(".name", card).title = file.name || "";
  return card;
}

function pump() {
  while (state.inFlight < MAX_IN_FLIGHT && state.queue.length) {
    const job = state.queue.shift();
    state.inFlight += 1;
    classify(job).finally(() => {
      state.inFlight -= 1;
      state.done += 1;
      updateSummary();
      pump();
    });
  }
}

async function post(path, file) {
  const body = new FormData();
  body.append("file", file, file.name || "pasted.png");
  const response = await fetch(path, { method: "POST", body, headers: authHeaders() });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(problem.detail || `${response.status} ${response.statusText}`);
  }
  return response;
}

async function classify({ file, card }) {
  try {
    const { results } = await (await post("/v1/predict", file)).json();
    showResult(card, results[0], file);
  } catch (error) {
    showError(card, error.message);
  } finally {
    card.setAttribute("aria-busy", "false");
  }
}

function showResult(card, record, file) {
  const pDog = record.p_dog;
  const label = record.label;
  card.dataset.label = label;
  $(".label", card).textContent = label === "unknown" ? "Neither cat nor dog" : label === "dog" ? "Dog" : "Cat";
  const sure = Math.round((label === "dog" ? pDog : 1 - pDog) * 100);
  $(".confidence", card).textContent = label === "unknown" ? "" : sure > 99 ? ">99% sure" : `${sure}% sure`;
  const percent = Math.round(pDog * 1000) / 10;
  $(".fill", card).style.width = `${percent}%`;
  const bar = $(".bar", card);
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-valuetext", `${percent}% dog`);
  $(".p", card).textContent = `p(dog) ${pDog.toFixed(3)}`;
  if (state.info && state.info.explain) {
    const button = $(".explain", card);
    button.hidden = false;
    button.addEventListener("click", () => toggleExplain(card, file, button));
  }
}

function showError(card, message) {
  card.dataset.label = "error";
  $(".label", card).textContent = "Could not read this one";
  $(".bar", card).hidden = true;
  $(".scale", card).hidden = true;
  const error = $(".error", card);
  error.hidden = false;
  error.textContent = message;
}

async function toggleExplain(card, file, button) {
  const img = $("img", card);
  const showing = button.getAttribute("aria-pressed") === "true";
  if (showing) {
    img.src = card.dataset.original;
    button.setAttribute("aria-pressed", "false");
    button.textContent = "Show where it looked";
    return;
  }
  button.disabled = true;
  try {
    if (!card.dataset.overlay) {
      const blob = await (await post("/v1/explain", file)).blob();
      card.dataset.overlay = URL.createObjectURL(blob);
    }
    img.src = card.dataset.overlay;
    button.setAttribute("aria-pressed", "true");
    button.textContent = "Show the photo";
  } catch (error) {
    button.textContent = `Heat map failed: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

function updateSummary() {
  const pending = state.total - state.done;
  $("#summary").textContent = pending
    ? `Classifying ${pending} of ${state.total}…`
    : `${state.total} ${state.total === 1 ? "photo" : "photos"} classified`;
}

function clearAll() {
  for (const card of document.querySelectorAll(".card")) {
    URL.revokeObjectURL(card.dataset.original);
    if (card.dataset.overlay) URL.revokeObjectURL(card.dataset.overlay);
  }
  $("#cards").replaceChildren();
  // Requests still in flight finish into detached cards; count only them from now on.
  Object.assign(state, { queue: [], done: 0, total: state.inFlight });
  $("#toolbar").hidden = state.total === 0;
}

function wire() {
  const drop = $("#drop");
  const input = $("#file-input");
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles(event.dataTransfer.files);
  });
  // Dropping beside the zone should not navigate away to the image.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.target !== drop && !drop.contains(event.target)) addFiles(event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    if (event.target === $("#api-key")) return;
    const files = [...(event.clipboardData?.items || [])]
      .filter((item) => item.kind === "file")
      .map((item) => item.getAsFile());
    if (files.length) addFiles(files);
  });
  drop.addEventListener("click", (event) => {
    if (!event.target.closest("label")) input.click(); // the label opens the picker by itself
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  $("#clear").addEventListener("click", clearAll);
  $("#api-key").addEventListener("change", (event) => sessionStorage.setItem("catdog-key", event.target.value));
  $("#key-form").addEventListener("submit", (event) => event.preventDefault());
}

wire();
loadInfo();
