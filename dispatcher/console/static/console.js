// Chorus console: live updates by polling the JSON API. No framework, no build step.
"use strict";

const POLL_TASK_MS = 1500;
const POLL_LIST_MS = 5000;

async function getJSON(url) {
  const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (answer.status === 401) {
    window.location.reload(); // the session ended: the page itself shows the login form
    throw new Error("session ended");
  }
  if (!answer.ok) throw new Error(`${url}: ${answer.status}`);
  return answer.json();
}

// The task page: poll the task's live state; fetch the server-rendered body when it changed.
function followTask(container) {
  const section = () => container.querySelector("section.task");
  const tick = async () => {
    if (section().dataset.finished === "true") return;
    try {
      const live = await getJSON(container.dataset.liveUrl);
      if (live.version !== section().dataset.version) {
        const answer = await fetch(container.dataset.fragmentUrl, { credentials: "same-origin" });
        if (answer.ok) {
          const open = new Set([...container.querySelectorAll("details[open]")].map((d) => d.parentElement.dataset.messageId));
          container.innerHTML = await answer.text();
          for (const node of container.querySelectorAll("li.node")) {
            if (open.has(node.dataset.messageId)) node.querySelector("details").open = true;
          }
        }
      }
    } catch (error) {
      console.warn(error);
    }
    setTimeout(tick, POLL_TASK_MS);
  };
  setTimeout(tick, POLL_TASK_MS);
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

// The task list: rebuild the rows from /api/tasks with the same filters.
function followTaskList(table) {
  const body = table.querySelector("tbody");
  const count = document.getElementById("tasks-count");
  const tick = async () => {
    try {
      const { tasks } = await getJSON(table.dataset.apiUrl);
      const rows = tasks.map((task) => {
        const tr = document.createElement("tr");
        tr.dataset.taskId = task.task_id;
        const link = document.createElement("a");
        link.href = table.dataset.taskUrl + encodeURIComponent(task.task_id);
        link.textContent = task.task_id;
        const first = document.createElement("td");
        first.appendChild(link);
        const status = document.createElement("span");
        status.className = `status status-${task.status}`;
        status.textContent = task.status;
        const second = document.createElement("td");
        second.appendChild(status);
        tr.append(
          first,
          second,
          cell(task.workflow),
          cell(task.agents.join(", ")),
          cell(String(task.steps), "num"),
          cell(`${task.input_tokens}+${task.output_tokens}`, "num"),
          cell((task.cost_micro_usd / 1e6).toFixed(6), "num"),
          cell(task.submitted_at.slice(0, 19)),
          cell(task.source),
        );
        return tr;
      });
      body.replaceChildren(...rows);
      if (count) count.textContent = `${rows.length} task(s); this list refreshes every few seconds.`;
    } catch (error) {
      console.warn(error);
    }
    setTimeout(tick, POLL_LIST_MS);
  };
  setTimeout(tick, POLL_LIST_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const task = document.getElementById("task-body");
  if (task) followTask(task);
  const list = document.getElementById("tasks");
  if (list) followTaskList(list);
});
