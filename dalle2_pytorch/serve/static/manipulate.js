// The "Edit an image" panel: upload, choose variations / text diff / inpaint (mask painted on a canvas) / outpaint,
// send to the matching /v1/... endpoint and follow the job like a text-to-image one.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SIDE = 256;  // canvas pixels; the server resizes image and mask to the model's size
  const view = $("m-canvas");
  const mask = document.createElement("canvas");
  let picture = null;  // the uploaded image (HTMLImageElement)
  let imageURL = null;  // ... as a data URL
  let painting = false;

  function showError(message) { $("m-error").textContent = message; $("m-error").hidden = !message; }
  function setProgress(fraction, text) {
    $("m-status").hidden = false;
    $("m-progress").value = fraction;
    $("m-progress-text").textContent = text;
  }

  function resetMask() {
    mask.width = mask.height = view.width = view.height = SIDE;
    const m = mask.getContext("2d");
    m.fillStyle = "#fff";  // light = keep
    m.fillRect(0, 0, SIDE, SIDE);
    const v = view.getContext("2d");
    v.imageSmoothingEnabled = false;
    v.clearRect(0, 0, SIDE, SIDE);
    if (picture) v.drawImage(picture, 0, 0, SIDE, SIDE);
  }

  function paintAt(event) {
    const box = view.getBoundingClientRect();
    const x = (event.clientX - box.left) * SIDE / box.width, y = (event.clientY - box.top) * SIDE / box.height;
    const radius = Number($("m-brush").value) * SIDE / 100;
    for (const [canvas, colour] of [[mask, "#000"], [view, "rgba(255, 0, 0, 0.45)"]]) {
      const c = canvas.getContext("2d");
      c.fillStyle = colour;
      c.beginPath();
      c.arc(x, y, radius, 0, 2 * Math.PI);
      c.fill();
    }
    view.dataset.painted = "yes";
  }

  function chooseMode() {
    const mode = $("m-mode").value;
    for (const fields of document.querySelectorAll("#manipulate-form [data-modes]")) {
      fields.hidden = !fields.dataset.modes.split(" ").includes(mode);
    }
  }

  function upload() {
    const file = $("m-file").files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      imageURL = reader.result;
      const img = new Image();
      img.onload = () => { picture = img; resetMask(); view.dataset.loaded = "yes"; };
      img.onerror = () => showError("this file is not an image the browser can show; the server will say why");
      img.src = imageURL;
    };
    reader.readAsDataURL(file);
  }

  function number(id) { const raw = $(id).value.trim(); return raw === "" ? undefined : Number(raw); }

  function requestFor(mode) {
    const body = { image: imageURL, seed: number("m-seed"), steps: number("m-steps") };
    if (mode === "variations") return ["/v1/variations", { ...body, num: number("m-num") }];
    if (mode === "text-diff") {
      const amounts = $("m-amounts").value.split(",").map(Number);
      return ["/v1/text-diff", { ...body, from_text: $("m-from").value, to_text: $("m-to").value, amounts }];
    }
    const paint = { ...body, num: number("m-num"), text: $("m-text").value.trim() || undefined,
                    sampler: $("m-sampler").value || undefined };
    if (mode === "inpaint") return ["/v1/inpaint", { ...paint, mask: mask.toDataURL("image/png") }];
    return ["/v1/outpaint", { ...paint, scale: number("m-scale") }];
  }

  function show(job) {
    for (const image of job.images) {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.src = image.url;
      img.alt = image.prompt;
      const caption = document.createElement("figcaption");
      caption.textContent = `${image.prompt}; seed ${image.seed}`;
      figure.append(img, caption);
      $("m-gallery").prepend(figure);
    }
  }

  function finish(job) {
    $("m-run").disabled = false;
    $("m-status").dataset.state = job.status;
    if (job.status === "done") { setProgress(1, `done in ${job.seconds} s`); show(job); }
    else { setProgress(job.progress, "failed"); showError(job.error || "failed"); }
  }

  async function run(event) {
    event.preventDefault();
    showError("");
    if (!imageURL) return showError("choose an image first");
    const [url, body] = requestFor($("m-mode").value);
    $("m-run").disabled = true;
    $("m-status").dataset.state = "running";
    setProgress(0, "sending");
    try {
      const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body) });
      const data = await response.json();
      if (!response.ok) throw new Error(data.error || response.statusText);
      const events = new EventSource(data.events_url);
      const onUpdate = (message) => {
        const job = JSON.parse(message.data);
        if (job.status === "done" || job.status === "failed") { events.close(); finish(job); }
        else setProgress(job.progress, `${job.status} ${Math.round(job.progress * 100)}%`);
      };
      for (const name of ["progress", "done", "failed"]) events.addEventListener(name, onUpdate);
    } catch (error) {
      $("m-run").disabled = false;
      $("m-status").dataset.state = "error";
      showError(error.message);
    }
  }

  view.addEventListener("pointerdown", (e) => { painting = true; paintAt(e); });
  view.addEventListener("pointermove", (e) => { if (painting) paintAt(e); });
  window.addEventListener("pointerup", () => { painting = false; });
  $("m-clear").addEventListener("click", resetMask);
  $("m-file").addEventListener("change", upload);
  $("m-mode").addEventListener("change", chooseMode);
  $("manipulate-form").addEventListener("submit", run);
  resetMask();
  chooseMode();
})();
