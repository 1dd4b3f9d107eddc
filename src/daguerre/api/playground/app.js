// daguerre playground: plain JavaScript on the public API (no build step, nothing from elsewhere).
// The key is kept in this browser's localStorage and sent as a Bearer token to this server only.
"use strict";

const API = new URL("v1/", document.baseURI.replace(/playground\/?$/, "")).href;
const $ = (id) => document.getElementById(id);
let key = localStorage.getItem("daguerre-key") || "";
let current = null; // the generation the job panel shows
let editSource = null; // {generation_id} to edit instead of a file
let following = null; // AbortController of the events stream

function headers(extra = {}) {
  return { Authorization: `Bearer ${key}`, ...extra };
}

async function api(method, path, body) {
  const init = { method, headers: headers() };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(API + path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const detail = data && data.detail;
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return data;
}

// Files: upload one image inline and wait until the server has checked it.
async function upload(file, purpose) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("purpose", purpose);
  let created = await api("POST", "files", form);
  let record = created.file || created;
  for (let i = 0; record.state !== "ready" && record.state !== "failed" && i < 300; i++) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    record = await api("GET", `files/${record.id}`);
  }
  if (record.state !== "ready") throw new Error(`${file.name}: ${record.failure_reason || "not accepted"}`);
  return { file_id: record.id };
}

// The job panel -----------------------------------------------------------------------------------

function show(generation) {
  current = generation;
  $("job").hidden = false;
  $("job-id").textContent = generation.id;
  $("job-state").textContent = generation.state;
  const ended = generation.state === "completed" || generation.state === "failed";
  $("cancel").hidden = ended;
  $("job-failure").hidden = generation.state !== "failed";
  $("job-failure").textContent = generation.state === "failed" ? `${generation.failure_code}: ${generation.failure_reason}` : "";
  const output = generation.state === "completed" && generation.output && generation.output[0];
  if (ended || generation.id !== $("preview").dataset.generation) $("preview").hidden = true;
  $("result").hidden = !output;
  $("download").hidden = !output;
  $("edit-result").hidden = !output;
  if (output) {
    $("result").src = output.url;
    $("download").href = output.url;
    $("download").download = `${generation.id}.${output.url.includes(".jpg") ? "jpg" : "png"}`;
    $("job-progress").value = $("job-progress").max;
  }
}

function progress(step, total) {
  $("job-progress").max = total;
  $("job-progress").value = step;
  $("job-state").textContent = `processing, step ${step} of ${total}`;
}

// The picture so far: small and rough, shown scaled up until the result replaces it.
function preview(generationId, payload) {
  const image = $("preview");
  image.src = `data:${payload.media_type};base64,${payload.data}`;
  image.alt = `a preview of the picture at step ${payload.step} of ${payload.total}`;
  image.dataset.generation = generationId;
  image.hidden = false;
}

// Server-Sent Events over fetch (EventSource cannot send the Authorization header).
async function follow(generation) {
  if (following) following.abort();
  following = new AbortController();
  show(generation);
  $("job-progress").removeAttribute("value");
  try {
    const response = await fetch(API + `generations/${generation.id}/events`, {
      headers: headers({ Accept: "text/event-stream" }),
      signal: following.signal,
    });
    if (!response.ok) throw new Error(`events: ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (!data) continue;
        const payload = JSON.parse(data);
        if (name === "generation") {
          show(payload);
          if (payload.state === "completed" || payload.state === "failed") {
            loadGallery();
            return;
          }
        } else if (name === "queue") {
          $("job-state").textContent = `queued, position ${payload.position}`;
        } else if (name === "progress") {
          progress(payload.step, payload.total);
        } else if (name === "preview") {
          preview(generation.id, payload);
        }
      }
    }
  } catch (error) {
    if (error.name === "AbortError") return;
  }
  // The stream is gone (a proxy, or a server without events): read the generation until it ends.
  for (;;) {
    const generation2 = await api("GET", `generations/${generation.id}`);
    show(generation2);
    if (generation2.state === "completed" || generation2.state === "failed") break;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  loadGallery();
}

// Creating --------------------------------------------------------------------------------------

async function generate(event) {
  event.preventDefault();
  if (!key) return say("Enter your API key first.");
  const button = $("generate");
  button.disabled = true;
  try {
    const body = {
      prompt: $("prompt").value,
      model: $("model").value,
      style: $("style").value,
      output_format: $("format").value,
    };
    if ($("aspect-ratio").value) body.aspect_ratio = $("aspect-ratio").value;
    const file = $("source-file").files[0];
    if (file || editSource) {
      body.type = "image_edit";
      body.source = file ? await upload(file, "input") : editSource;
    }
    const references = [...$("reference-files").files];
    if (references.length) body.image_ref = await Promise.all(references.map((f) => upload(f, "reference")));
    const generation = await api("POST", "generations", body);
    clearEdit(); // the next edit starts from this result ("Edit this image") or a new file
    $("source-file").value = "";
    follow(generation);
    loadGallery();
  } catch (error) {
    say(error.message);
  } finally {
    button.disabled = false;
  }
}

function say(message) {
  $("job").hidden = false;
  $("job-failure").hidden = false;
  $("job-failure").textContent = message;
}

function editThis(generation) {
  editSource = { generation_id: generation.id };
  $("source-file").value = "";
  $("edit-source").textContent = generation.id;
  $("edit-note").hidden = false;
  $("prompt").value = "";
  $("prompt").placeholder = "what to change, e.g. make the circle green";
  $("prompt").focus();
}

function clearEdit() {
  editSource = null;
  $("edit-note").hidden = true;
}

// The gallery -----------------------------------------------------------------------------------

async function loadGallery() {
  if (!key) return;
  let page;
  try {
    page = await api("GET", "generations?limit=24");
  } catch (error) {
    $("key-state").textContent = error.message;
    return;
  }
  const list = $("gallery");
  list.replaceChildren();
  for (const generation of page.data) {
    const item = document.createElement("li");
    item.dataset.id = generation.id;
    item.dataset.state = generation.state;
    const open = document.createElement("button");
    open.type = "button";
    open.title = `Show ${generation.id}`;
    open.addEventListener("click", () => (generation.state === "queued" || generation.state === "processing" ? follow(generation) : show(generation)));
    if (generation.state === "completed" && generation.output && generation.output[0]) {
      const image = document.createElement("img");
      image.src = generation.output[0].url;
      image.alt = `${generation.type} ${generation.id}`;
      image.loading = "lazy";
      open.append(image);
    } else {
      open.textContent = generation.state === "failed" ? "✕" : "…";
    }
    const state = document.createElement("div");
    state.className = "state";
    state.textContent = `${generation.state} · ${generation.model}`;
    item.append(open, state);
    if (generation.state === "failed") {
      const failure = document.createElement("div");
      failure.className = "failure";
      failure.textContent = generation.failure_reason || generation.failure_code;
      item.append(failure);
    }
    list.append(item);
  }
}

// Wiring ----------------------------------------------------------------------------------------

$("key").value = key;
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value.trim();
  localStorage.setItem("daguerre-key", key);
  $("key-state").textContent = "saved";
  loadGallery();
});
$("generate-form").addEventListener("submit", generate);
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("generate-form").requestSubmit();
});
$("cancel").addEventListener("click", async () => {
  if (!current) return;
  try {
    show(await api("POST", `generations/${current.id}/cancel`));
    loadGallery();
  } catch (error) {
    say(error.message);
  }
});
$("edit-result").addEventListener("click", () => current && editThis(current));
$("clear-edit").addEventListener("click", clearEdit);
$("source-file").addEventListener("change", clearEdit);
$("refresh").addEventListener("click", loadGallery);
loadGallery();
