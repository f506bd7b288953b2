// alarm-bridge dashboard: refreshes the page's parts in place and sends operator commands.
//
// The page names the fragment to poll in <body data-refresh>; every element of that fragment with
// data-part and an id replaces the element of the same id here. Commands are calls to the operator
// API with the session's CSRF token (from the <meta> tags), never form posts.
(function () {
  "use strict";

  const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || "";
  const csrfToken = meta("csrf-token");
  const csrfHeader = meta("csrf-header") || "X-CSRF-Token";
  const DONE = {
    verify: (body) => `Verdict recorded: ${body.verdict}.`,
    acknowledge: () => "Acknowledged.",
    end: (body) => `Ended${body.outcome ? ` (${body.outcome.replace("_", " ")})` : ""}.`,
    retry: () => "Retry queued.",
  };
  let inFlight = false;
  let again = false; // a refresh asked for while one was under way runs right after it

  function showMessage(text, kind) {
    const box = document.getElementById("command-message");
    if (!box) return;
    box.textContent = text;
    box.className = `message ${kind}`;
    box.hidden = !text;
  }

  function setLive(text, ok) {
    const live = document.getElementById("live-status");
    if (!live) return;
    live.textContent = text;
    live.classList.toggle("lost", !ok);
  }

  function syncCommands() {
    const status = document.getElementById("status");
    const ended = Boolean(status && status.dataset.state === "ended");
    // An ended alarm still takes Acknowledge while something raised after its end waits for a person.
    const waits = Boolean(status && status.dataset.needsPerson === "true");
    document.querySelectorAll("#commands button, #commands select").forEach((el) => {
      el.disabled = ended && !(waits && "afterEnd" in el.dataset);
    });
  }

  function swapParts(html) {
    const fresh = new DOMParser().parseFromString(html, "text/html");
    fresh.querySelectorAll("[data-part][id]").forEach((part) => {
      const current = document.getElementById(part.id);
      if (current && current.outerHTML !== part.outerHTML) {
        current.replaceWith(document.importNode(part, true));
      }
    });
    syncCommands();
  }

  async function refresh() {
    const url = document.body.dataset.refresh;
    if (!url) return;
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.status === 401) {
        window.location.reload(); // signed out: the page itself sends us to the sign-in form
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      swapParts(await response.text());
      setLive(`Live · ${new Date().toISOString().slice(11, 19)} UTC`, true);
    } catch (error) {
      setLive(`Not updating (${error.message}); retrying`, false);
    } finally {
      inFlight = false;
    }
    if (again) {
      again = false;
      await refresh();
    }
  }

  function commandBody(button) {
    const body = {};
    if (button.dataset.verdict) body.verdict = button.dataset.verdict;
    if (button.dataset.outcomeFrom) {
      const choice = document.getElementById(button.dataset.outcomeFrom);
      if (choice && choice.value) body.outcome = choice.value;
    }
    return body;
  }

  function describeError(status, payload) {
    if (status === 401) return "You are signed out: reload the page and sign in again.";
    let text = (payload && payload.message) || `The request failed (HTTP ${status}).`;
    if (payload && payload.fields) {
      const fields = Object.entries(payload.fields).map(([name, problems]) => `${name}: ${[].concat(problems).join(", ")}`);
      text += ` (${fields.join("; ")})`;
    }
    return text;
  }

  async function runCommand(button) {
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const body = commandBody(button);
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    showMessage("", "");
    try {
      const response = await fetch(button.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", [csrfHeader]: csrfToken },
        body: JSON.stringify(body),
      });
      const payload = await response.json().catch(() => null);
      if (response.ok) {
        const done = DONE[button.dataset.command];
        showMessage(done ? done(body) : "Done.", "ok");
      } else {
        showMessage(describeError(response.status, payload), "error");
      }
    } catch (error) {
      showMessage(`The request did not reach alarm-bridge (${error.message}).`, "error");
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      await refresh();
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-command]");
    if (button) {
      event.preventDefault();
      runCommand(button);
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    syncCommands();
    if (document.body.dataset.refresh) {
      setLive("Live", true);
      window.setInterval(refresh, Number(document.body.dataset.every) || 3000);
    }
  });
})();
