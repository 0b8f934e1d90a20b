// The page: send the form to POST /v1/generate, follow the job's server-sent events, show the images.
"use strict";

const $ = (id) => document.getElementById(id);
const NUMBER_FIELDS = ["n", "cond_scale", "prior_cond_scale", "steps", "seed"];

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setProgress(fraction, text) {
  $("status").hidden = false;
  $("progress").value = fraction;
  $("progress-text").textContent = text;
}

async function loadModelInfo() {
  try {
    const health = await (await fetch("/v1/health")).json();
    const model = health.model;
    for (const name of model.samplers) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      $("sampler").appendChild(option);
    }
    $("steps").max = model.max_steps;
    const d = model.defaults;
    $("model-info").textContent = `${model.model}, ${model.image_size}px, ${model.num_unets} unet(s); ` +
      `defaults: sampler ${d.sampler ?? "ddpm"}, steps ${d.steps ?? model.max_steps}, guidance ${d.cond_scale}` +
      (model.decoder_guidance ? "" : " (this decoder cannot guide)");
  } catch (error) {
    $("model-info").textContent = "could not reach the server: " + error;
  }
}

function requestBody() {
  const body = { prompt: $("prompt").value };
  for (const name of NUMBER_FIELDS) {
    const raw = $(name).value.trim();
    if (raw !== "") body[name] = Number(raw);
  }
  if ($("sampler").value) body.sampler = $("sampler").value;
  return body;
}

function settingsText(settings) {
  return Object.entries(settings)
    .filter(([, value]) => value !== null)
    .map(([key, value]) => `${key} ${value}`)
    .join(", ") || "default settings";
}

function addToGallery(job) {
  const figures = [];
  for (const [index, image] of job.images.entries()) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = image.url;
    img.alt = image.prompt;
    const caption = document.createElement("figcaption");
    const prompt = document.createElement("span");
    prompt.className = "prompt";
    prompt.textContent = image.prompt;
    const details = document.createElement("span");
    details.textContent = `seed ${image.seed}; ${settingsText(job.settings)} `;
    const link = document.createElement("a");
    link.href = image.url;
    link.download = `dalle2-${image.seed}-${index}.png`;
    link.textContent = "download";
    caption.append(prompt, details, link);
    figure.append(img, caption);
    figures.push(figure);
  }
  $("gallery").prepend(...figures);  // newest job first, its images in seed order
}

function finish(job) {
  $("generate").disabled = false;
  $("status").dataset.state = job.status;
  if (job.status === "done") {
    setProgress(1, `done in ${job.seconds} s (batch of ${job.batch_size})`);
    addToGallery(job);
  } else {
    setProgress(job.progress, "failed");
    showError(job.error || "generation failed");
  }
}

function follow(accepted) {
  const events = new EventSource(accepted.events_url);
  const onUpdate = (message) => {
    const job = JSON.parse(message.data);
    if (job.status === "done" || job.status === "failed") {
      events.close();
      finish(job);
    } else {
      setProgress(job.progress, `${job.status} ${Math.round(job.progress * 100)}%`);
    }
  };
  events.addEventListener("progress", onUpdate);
  events.addEventListener("done", onUpdate);
  events.addEventListener("failed", onUpdate);
  events.onerror = () => { events.close(); poll(accepted.status_url); };
}

async function poll(url) {  // fallback when the event stream breaks
  const job = await (await fetch(url)).json();
  if (job.status === "done" || job.status === "failed") return finish(job);
  setProgress(job.progress, `${job.status} ${Math.round(job.progress * 100)}%`);
  setTimeout(() => poll(url), 300);
}

async function submit(event) {
  event.preventDefault();
  showError("");
  $("status").dataset.state = "running";
  $("generate").disabled = true;
  setProgress(0, "sending");
  try {
    const response = await fetch("/v1/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(requestBody()),
    });
    const data = await response.json();
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      throw new Error((data.error || response.statusText) + (retry ? ` (retry after ${retry} s)` : ""));
    }
    setProgress(0, "queued");
    follow(data);
  } catch (error) {
    $("generate").disabled = false;
    $("status").hidden = true;
    $("status").dataset.state = "error";
    showError(error.message);
  }
}

$("generate-form").addEventListener("submit", submit);
loadModelInfo();
