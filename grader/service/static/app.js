// hw-grader: upload by drop or picker, live batch progress, sortable tables. No libraries.
"use strict";

function setupUpload() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const zone = document.getElementById("drop-zone");
  const input = document.getElementById("file-input");
  const status = document.getElementById("upload-status");

  async function upload(file) {
    if (!file) return;
    status.textContent = `Uploading ${file.name}…`;
    const body = new FormData();
    body.append("file", file);
    try {
      const response = await fetch(form.action, { method: "POST", body, credentials: "same-origin" });
      const payload = await response.json().catch(() => ({}));
      if (!response.ok) {
        status.textContent = payload.detail || payload.title || `Upload failed (${response.status}).`;
        status.classList.add("error");
        return;
      }
      status.textContent = "Uploaded. Opening the batch…";
      window.location.assign(`/batches/${payload.id}`);
    } catch (error) {
      status.textContent = `Upload failed: ${error}`;
      status.classList.add("error");
    }
  }

  input.addEventListener("change", () => upload(input.files[0]));
  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("dragging")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    upload(event.dataTransfer.files[0]);
  });
}

function setupSorting(root) {
  root.querySelectorAll("table.sortable").forEach((table) => {
    table.querySelectorAll("th button").forEach((button) => {
      button.addEventListener("click", () => sortTable(table, button));
    });
  });
}

function sortTable(table, button) {
  const th = button.closest("th");
  const column = Number(button.dataset.column);
  const numeric = button.dataset.numeric === "true";
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach((other) => other.setAttribute("aria-sort", "none"));
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const key = (row) => {
    const value = row.cells[column].dataset.value || "";
    return numeric ? Number(value) : value.toLowerCase();
  };
  rows.sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    const order = x < y ? -1 : x > y ? 1 : 0;
    return ascending ? order : -order;
  });
  rows.forEach((row) => body.appendChild(row));
}

function setupBatch() {
  const batch = document.getElementById("batch");
  if (!batch) return;
  const id = batch.dataset.batchId;
  const progress = document.getElementById("batch-progress");
  const text = document.getElementById("progress-text");
  const statusPill = document.getElementById("batch-status");
  let lastDone = Number(progress.value);
  let finished = ["done", "failed"].includes(batch.dataset.status);

  async function refreshResults() {
    const response = await fetch(`/batches/${id}/results`, { credentials: "same-origin" });
    if (!response.ok) return;
    const results = document.getElementById("results");
    results.innerHTML = await response.text();
    setupSorting(results);
  }

  async function poll() {
    try {
      const response = await fetch(`/api/v1/batches/${id}`, { credentials: "same-origin" });
      if (response.ok) {
        const state = await response.json();
        finished = ["done", "failed"].includes(state.status);
        if (state.progress.done !== lastDone || finished) {
          lastDone = state.progress.done;
          await refreshResults();
        }
        // the status changes only after the table shows what it describes
        progress.max = Math.max(state.progress.total, 1);
        progress.value = state.progress.done;
        text.textContent = `${state.progress.done} of ${state.progress.total} graded`;
        statusPill.textContent = state.status;
        statusPill.className = `pill pill-${state.status}`;
        if (finished) {
          batch.dataset.status = state.status;
          return;
        }
      }
    } catch (error) {
      text.textContent = `Lost contact with the server; retrying… (${error})`;
    }
    window.setTimeout(poll, 700);
  }
  if (!finished) window.setTimeout(poll, 300);
}

document.addEventListener("DOMContentLoaded", () => {
  setupUpload();
  setupSorting(document);
  setupBatch();
});
